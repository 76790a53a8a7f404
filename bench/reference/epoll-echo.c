/*
 * A throwaway reference server for the bench, not a lab: the leanest single-threaded epoll
 * server we could write in C, to see how far ahead of tokio a server with (almost) no work in
 * user space gets on this machine. It speaks only what the bench's `echo` and `connect`
 * workloads use: HELLO on connect, ECHO, QUIT. It cuts corners the labs must not: no partial
 * writes (64-byte replies always fit), no caps, no narration.
 *
 * Build it under the name of lab04's binary, and point the bench at its folder:
 *
 *   mkdir -p /tmp/ref && gcc -O2 -o /tmp/ref/multiplex-server bench/reference/epoll-echo.c
 *   cargo run --release -p bench -- --bin-dir /tmp/ref --targets epoll,tokio-ct \
 *       -c 100,1000 -d 3 --workloads echo --repeat 3
 *
 * (The `epoll` row is then this program.) bench/NOTES.md has what it measured here.
 */
#define _GNU_SOURCE
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_FD 65536

static char *pending[MAX_FD]; /* an unfinished line per descriptor, if any */
static int pending_len[MAX_FD];

static void stop(int sig) { (void)sig; _exit(0); }

static void forget(int fd) {
    free(pending[fd]);
    pending[fd] = NULL;
    pending_len[fd] = 0;
}

int main(int argc, char **argv) {
    int port = 0, one = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help")) { puts("usage: multiplex-server [--port N]"); return 0; }
        if (!strcmp(argv[i], "--port") && i + 1 < argc) port = atoi(argv[++i]);
    } /* other flags (--quiet, --backlog ...) are accepted and ignored */
    signal(SIGTERM, stop);
    signal(SIGINT, stop);
    signal(SIGPIPE, SIG_IGN);

    int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons(port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof addr;
    if (bind(listener, (void *)&addr, sizeof addr) || listen(listener, 4096) ||
        getsockname(listener, (void *)&addr, &len)) { perror("listen"); return 1; }
    printf("listening on 127.0.0.1:%d\n", ntohs(addr.sin_port));
    fflush(stdout);

    int ep = epoll_create1(0);
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = listener }, events[1024];
    epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev);
    char hello[128], in[65536], out[70000];
    int hello_len = snprintf(hello, sizeof hello, "HELLO multiplex pid=%d tid=%d\n", getpid(), gettid());

    for (;;) {
        int ready = epoll_wait(ep, events, 1024, -1); /* level-triggered */
        for (int i = 0; i < ready; i++) {
            int fd = events[i].data.fd;
            if (fd == listener) {
                int client;
                while ((client = accept4(listener, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    if (client >= MAX_FD) { close(client); continue; }
                    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    write(client, hello, hello_len);
                    struct epoll_event e = { .events = EPOLLIN, .data.fd = client };
                    epoll_ctl(ep, EPOLL_CTL_ADD, client, &e);
                }
                continue;
            }
            int n = read(fd, in, sizeof in);
            if (n <= 0) { forget(fd); close(fd); continue; }
            char *data = in;
            int size = n;
            if (pending_len[fd]) { /* glue the unfinished line in front */
                pending[fd] = realloc(pending[fd], pending_len[fd] + n);
                memcpy(pending[fd] + pending_len[fd], in, n);
                data = pending[fd];
                size = pending_len[fd] + n;
            }
            int o = 0, start = 0, quit = 0;
            for (int k = 0; k < size && o < 60000; k++) {
                if (data[k] != '\n') continue;
                char *line = data + start;
                int line_len = k - start;
                if (line_len && line[line_len - 1] == '\r') line_len--;
                if (line_len >= 5 && !strncmp(line, "ECHO ", 5)) {
                    memcpy(out + o, "OK ", 3);
                    memcpy(out + o + 3, line + 5, line_len - 5);
                    o += line_len - 2;
                    out[o++] = '\n';
                } else if (line_len == 4 && !strncmp(line, "QUIT", 4)) {
                    memcpy(out + o, "OK bye\n", 7);
                    o += 7;
                    quit = 1;
                    break;
                } else {
                    memcpy(out + o, "ERR unknown\n", 12);
                    o += 12;
                }
                start = k + 1;
            }
            if (!quit && start < size) { /* keep the unfinished line */
                char *rest = malloc(size - start);
                memcpy(rest, data + start, size - start);
                forget(fd);
                pending[fd] = rest;
                pending_len[fd] = size - start;
            } else {
                forget(fd);
            }
            if (o) write(fd, out, o);
            if (quit) close(fd);
        }
    }
}
