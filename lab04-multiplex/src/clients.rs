//! The table of connected clients, indexed by their descriptor.
//!
//! The event loop learns "descriptor 17 is ready" and must find client 17's state at once, many
//! thousand times a second. A descriptor is a small integer: the kernel always hands out the
//! *lowest* free number, so the numbers of a thousand connected clients are about 5 to 1,005,
//! with few holes. An array indexed by descriptor is then the simplest table there is, and the
//! fastest: no hashing, one bounds check. C servers do exactly this (`struct conn *conns[MAXFD]`);
//! here it is a `Vec<Option<Conn>>`, grown when a higher descriptor shows up.
//!
//! (The first version of this lab used a `HashMap<RawFd, Conn>`. It was correct, and `perf`
//! showed hashing as the event loop's biggest cost in user space: three lookups per request.)

use std::os::fd::RawFd;

/// Every connected client, at the index of its descriptor.
pub struct Clients<T> {
    slots: Vec<Option<T>>,
    count: usize,
}

impl<T> Default for Clients<T> {
    /// An empty table.
    fn default() -> Self {
        Clients {
            slots: Vec::new(),
            count: 0,
        }
    }
}

impl<T> Clients<T> {
    /// How many clients are connected.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Adds the client of descriptor `fd` (a descriptor is never negative).
    pub fn insert(&mut self, fd: RawFd, client: T) {
        let index = fd as usize;
        if index >= self.slots.len() {
            self.slots.resize_with(index + 1, || None);
        }
        if self.slots[index].replace(client).is_none() {
            self.count += 1;
        }
    }

    /// Takes the client of `fd` out of the table (`None`: no such client).
    pub fn remove(&mut self, fd: RawFd) -> Option<T> {
        let client = self.slots.get_mut(fd as usize)?.take();
        if client.is_some() {
            self.count -= 1;
        }
        client
    }

    /// The client of `fd`, if connected.
    pub fn get(&self, fd: RawFd) -> Option<&T> {
        self.slots.get(fd as usize)?.as_ref()
    }

    /// The client of `fd`, if connected, to change it.
    pub fn get_mut(&mut self, fd: RawFd) -> Option<&mut T> {
        self.slots.get_mut(fd as usize)?.as_mut()
    }

    /// Every connected client with its descriptor, to change them.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (RawFd, &mut T)> {
        self.slots
            .iter_mut()
            .enumerate()
            .filter_map(|(fd, slot)| Some((fd as RawFd, slot.as_mut()?)))
    }

    /// Takes every client out of the table.
    pub fn drain(&mut self) -> impl Iterator<Item = (RawFd, T)> {
        self.count = 0;
        std::mem::take(&mut self.slots)
            .into_iter()
            .enumerate()
            .filter_map(|(fd, slot)| Some((fd as RawFd, slot?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_find_remove_and_count() {
        let mut table = Clients::default();
        table.insert(7, "seven");
        table.insert(5, "five");
        assert_eq!(table.len(), 2);
        assert_eq!(table.get(7), Some(&"seven"));
        assert_eq!(table.get(6), None);
        assert_eq!(table.get(1000), None, "past the end: not connected");
        assert_eq!(table.remove(7), Some("seven"));
        assert_eq!(table.remove(7), None, "gone");
        assert_eq!(table.len(), 1);
        table.insert(5, "five again");
        assert_eq!(table.len(), 1, "replacing does not count twice");
        let all: Vec<_> = table.drain().collect();
        assert_eq!(all, vec![(5, "five again")]);
        assert_eq!(table.len(), 0);
        assert_eq!(table.get(5), None);
    }
}
