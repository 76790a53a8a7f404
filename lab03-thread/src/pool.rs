//! `--pool N`: a fixed pool of worker threads, made before the first client arrives.
//!
//! This is the thread pool of *The Rust Programming Language*'s final chapter, and the
//! "prethreaded server" of Stevens' *Unix Network Programming*. Instead of a new thread for every
//! client, N threads are started once; the main thread accepts connections and hands them over
//! through a channel; each worker takes the next connection, serves it to the end, and comes back
//! for another. At most N clients are served at once. The others wait their turn in the channel
//! (accepted, but no `HELLO` yet), and past that in the kernel's accept queue (접속 대기큐).
//!
//! The channel has one sender (the main thread) and N receivers, but a `Receiver` cannot be
//! cloned: the workers share it behind a `Mutex`, and whoever holds the lock waits for the next
//! connection.

use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::narrate;

/// The workers and the sending end of their queue.
pub struct Pool<Job> {
    queue: SyncSender<Job>,
    workers: Vec<JoinHandle<()>>,
}

impl<Job: Send + 'static> Pool<Job> {
    /// Starts `size` workers that run `serve(job)` for each job, one at a time. At most
    /// `waiting` jobs may wait in the queue for a free worker.
    pub fn new(
        size: usize,
        waiting: usize,
        serve: impl Fn(Job) + Send + Sync + 'static,
    ) -> io::Result<Self> {
        let (queue, jobs) = mpsc::sync_channel(waiting);
        let jobs = Arc::new(Mutex::new(jobs));
        let serve = Arc::new(serve);
        let mut workers = Vec::with_capacity(size);
        for number in 1..=size {
            let jobs = Arc::clone(&jobs);
            let serve = Arc::clone(&serve);
            let worker = thread::Builder::new()
                .name(format!("worker-{number}"))
                .spawn(move || work(&jobs, &*serve))?;
            workers.push(worker);
        }
        Ok(Pool { queue, workers })
    }

    /// Queues a job for the next free worker, without waiting. Gives the job back if the queue
    /// is full (`Err(TrySendError::Full(job))`).
    pub fn submit(&self, job: Job) -> Result<(), TrySendError<Job>> {
        self.queue.try_send(job)
    }

    /// Graceful shutdown: closes the queue, so that each worker ends once it has finished its
    /// client and the queue is empty, then joins the workers. Waits at most `grace`, and returns
    /// how many workers had not finished by then (the process is about to exit anyway).
    pub fn shut_down(self, grace: Duration) -> usize {
        drop(self.queue); // the workers' recv() fails once the queue is empty
        join_within(self.workers, grace)
    }
}

/// One worker's life: take a job, do it, come back for the next.
fn work<Job>(jobs: &Mutex<Receiver<Job>>, serve: &dyn Fn(Job)) {
    loop {
        // Hold the lock only while waiting for a job: the guard is a temporary, dropped at the
        // end of this statement, so the other workers can take the next job while we serve this
        // one. (`while let Ok(job) = jobs.lock().unwrap().recv() { .. }` would keep the lock for
        // the whole loop body, and the pool would serve one client at a time!)
        let job = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = job else {
            return; // the queue is closed and empty: the pool is shutting down
        };
        // A PANIC while serving would unwind out of this loop and the pool would lose a worker
        // for good. catch_unwind stops the unwinding here: the client's session ends (its guards
        // ran during the unwinding), the worker lives on. AssertUnwindSafe: what the session
        // shares with others is an atomic and a mutex that tolerates poisoning (room.rs), so
        // nothing is left half-changed for the next client.
        if panic::catch_unwind(AssertUnwindSafe(|| serve(job))).is_err() {
            narrate!("the worker caught the panic of the client it served; it takes the next one");
        }
    }
}

/// Joins `threads`, waiting at most `grace` for them to finish; returns how many were still
/// running. `JoinHandle::join` cannot time out, so we wait until a thread `is_finished` first.
pub fn join_within(threads: Vec<JoinHandle<()>>, grace: Duration) -> usize {
    let deadline = Instant::now() + grace;
    while threads.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    let mut still_running = 0;
    for thread in threads {
        if thread.is_finished() {
            let _ = thread.join(); // Err if it panicked: already narrated by the panic message
        } else {
            still_running += 1; // dropping the handle detaches it
        }
    }
    still_running
}
