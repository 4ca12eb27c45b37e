/*
 * Load generator in C for two regimes, each one epoll loop over
 * non-blocking sockets in one process:
 *
 *   fixed load (latency): N clients in the room, S of them sending R
 *     messages/s in total, evenly spaced, each line carrying its
 *     CLOCK_MONOTONIC send time (T<ns>); every client reads and parses
 *     every line and records send-to-delivery latency.
 *   closed loop (the single-message regime): N clients in the room, S
 *     senders each keep W single messages outstanding (one line per
 *     send()), the next one sent when an earlier one comes back (its
 *     echo); every client reads and counts every line, and the echoes give
 *     send-to-echo latency.
 *
 * Why it exists: loadgen.py does the same in Python processes that share
 * the machine's cores with the server; this does the same work at a small
 * fraction of the CPU, so the server gets the cores and the figures are
 * the server's, not the generator's.
 *
 * Built at run time by bench_load.py (cc -O2 -std=c99), libc only:
 *   loadgen_c sae|irc PORT CLIENTS SENDERS RATE WARMUP SECONDS FIRST_INDEX CONCURRENCY
 *   loadgen_c closed sae|irc PORT CLIENTS SENDERS WINDOW WARMUP SECONDS FIRST_INDEX CONCURRENCY
 *             [PART PARTS [LATENCY_FILE]]
 * The closed loop can be split over PARTS processes: this one takes the
 * clients i (0 <= i < CLIENTS) with i % PARTS == PART, as loadgen.py deals
 * them to its workers, and with PARTS > 1 it prints "ready" once its
 * clients are in and waits for "go <CLOCK_MONOTONIC ns>" on stdin: the
 * common time the senders start; the window opens WARMUP seconds later.
 * LATENCY_FILE receives this process's send-to-echo latencies (native
 * int64 ns, sorted), so that the caller can merge several processes'.
 *
 * Prints "phase=start" and "phase=end" at the measured window's edges (so
 * the caller can read the server's CPU time there), then one result line
 * of key=value figures. Errors go to stderr with exit status 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

/* Same text and password as loadgen.py, so both generators send the same bytes. */
#define PASSWORD "bench-password"
#define CHANNEL "#bench"
#define PADDING "the quick brown fox jumps over the lazy dog, twice"
/* Only the start of a line matters (login replies, and the send time,
 * which comes within the first ~60 bytes of a MSG or PRIVMSG line):
 * keeping just the head of each line bounds memory at 1000s of clients
 * whatever the length of USERS or NAMES lines. */
#define HEAD 160
#define RECV_BYTES (256 * 1024)
/* A chat line as sent: "PRIVMSG #bench :T<19 digits> " + padding + CRLF. */
#define LINE_MAX 128

enum { NEW, CONNECTING, LOGIN, ONLINE, FAILED };

struct client {
    int fd, state, sender;
    int index;               /* account u<index> */
    int ok_login, users;     /* sae: both seen means logged in */
    int head_len;            /* bytes of the current line kept in head */
    int64_t next_send;       /* fixed load, senders: next due time, ns */
    /* Closed loop. A watcher parses room messages to see senders' come back:
     * in sae every sender watches for its own; in IRC, which does not echo
     * a PRIVMSG to its sender, one ordinary receiver of this process
     * watches for all of this process's senders (as loadgen.py). */
    int watcher, outstanding;
    char *wbuf;              /* senders: bytes the kernel did not take yet */
    int wlen;
    char head[HEAD + 1];
};

static int irc, closed;
static struct client *clients;
static struct client **by_index; /* closed loop: CLIENTS slots, NULL if another process has it */
static int nclients, total_clients, first_index, epfd, failed, pending;
static int window_msgs;           /* closed loop: W */
static int64_t *lat;              /* latencies of messages sent inside the window, ns */
static size_t nlat, caplat;
static int64_t t_start, t_end;
static long long lines, sent, window_lines, echoes, window_echoes;
static int sending;               /* closed loop: from the senders' start until t_end */
/* Fixed load: every message sent inside the window, in send order (one
 * thread: the times increase), with its first and last arrival over all
 * receivers: the first is the server's turnaround (read, store, first
 * send), last minus first the spread of its pass over the room. */
#define MAX_MSGS 100000
static int64_t msg_sent[MAX_MSGS], msg_first[MAX_MSGS], msg_last[MAX_MSGS];
static int nmsgs;
/* stdin in the epoll set (PARTS > 1): the parent's "go <ns>" line. */
static int stdin_tag;
static char go_line[64];
static int go_len;
static int64_t go_at;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void fail(struct client *c, const char *why)
{
    if (c->state == CONNECTING || c->state == LOGIN)
        pending--;
    if (failed < 5)
        fprintf(stderr, "client u%05d: %s\n", c->index, why);
    failed++;
    c->state = FAILED;
    if (c->fd >= 0) {
        close(c->fd); /* also takes it out of the epoll set */
        c->fd = -1;
    }
}

static void keep_latency(int64_t ns)
{
    if (nlat == caplat) {
        caplat = caplat ? caplat * 2 : 1 << 20;
        lat = realloc(lat, caplat * sizeof *lat);
        if (!lat)
            die("realloc");
    }
    lat[nlat++] = ns;
}

static void record(int64_t sent_ns, int64_t at)
{
    /* As loadgen.latency_ms: only messages sent inside the window count. */
    if (sent_ns < t_start || sent_ns >= t_end)
        return;
    keep_latency(at - sent_ns);
    int lo = 0, hi = nmsgs - 1; /* binary search: the send times increase */
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (msg_sent[mid] == sent_ns) {
            if (!msg_first[mid] || at < msg_first[mid])
                msg_first[mid] = at;
            if (at > msg_last[mid])
                msg_last[mid] = at;
            return;
        }
        if (msg_sent[mid] < sent_ns)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
}

/* Decimal digits at *p into *value; moves *p past them; 0 if there were none. */
static int digits(const char **p, int64_t *value)
{
    const char *q = *p;
    int64_t v = 0;
    while (*q >= '0' && *q <= '9')
        v = v * 10 + (*q++ - '0');
    if (q == *p)
        return 0;
    *value = v;
    *p = q;
    return 1;
}

static void set_events(struct client *c, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        die("epoll_ctl");
}

/* Closed loop: one chat line in one send() of its own. What the kernel does
 * not take (it never should, with W short lines in flight) waits in wbuf,
 * in order, for EPOLLOUT. */
static void send_single(struct client *c)
{
    char line[LINE_MAX];
    int n = irc ? snprintf(line, sizeof line, "PRIVMSG " CHANNEL " :T%lld " PADDING "\r\n", (long long)now_ns())
                : snprintf(line, sizeof line, "SAY T%lld " PADDING "\n", (long long)now_ns());
    c->outstanding++;
    sent++;
    ssize_t done = 0;
    if (!c->wlen) {
        done = send(c->fd, line, n, MSG_NOSIGNAL);
        if (done < 0) {
            if (errno != EAGAIN && errno != EINTR) {
                fail(c, strerror(errno));
                return;
            }
            done = 0;
        }
        if (done == n)
            return;
        set_events(c, EPOLLIN | EPOLLOUT);
    }
    if (c->wlen + (n - done) > window_msgs * LINE_MAX) {
        fail(c, "more unsent than the window holds");
        return;
    }
    memcpy(c->wbuf + c->wlen, line + done, n - done);
    c->wlen += n - done;
}

static void on_writable(struct client *c)
{
    ssize_t done = send(c->fd, c->wbuf, c->wlen, MSG_NOSIGNAL);
    if (done < 0) {
        if (errno != EAGAIN && errno != EINTR)
            fail(c, strerror(errno));
        return;
    }
    memmove(c->wbuf, c->wbuf + done, c->wlen - done);
    c->wlen -= done;
    if (!c->wlen)
        set_events(c, EPOLLIN);
}

/* Closed loop: a room message seen by a watcher. As loadgen.py's regular
 * expressions: sae "MSG <id> <ts> u<n> T<ns> ", IRC ":u<n>!... PRIVMSG
 * <target> :T<ns> ". Each one from a sender of this process (sae: from
 * the watcher itself) lets that sender send the next. */
static void on_said(struct client *watcher, const char *line, int64_t at)
{
    const char *p = line;
    int64_t who, stamp;
    if (irc) {
        if (p[0] != ':' || p[1] != 'u')
            return;
        p += 2;
        if (!digits(&p, &who) || *p != '!')
            return;
        p = strstr(p, " PRIVMSG ");
        if (!p)
            return;
        p = strchr(p + 9, ' ');
        if (!p || strncmp(p, " :T", 3))
            return;
        p += 3;
    } else {
        if (strncmp(p, "MSG ", 4))
            return;
        p = strchr(p + 4, ' '); /* past the id */
        if (!p || !(p = strchr(p + 1, ' ')) || p[1] != 'u') /* past the time */
            return;
        p += 2;
        if (!digits(&p, &who) || strncmp(p, " T", 2))
            return;
        p += 2;
    }
    if (!digits(&p, &stamp) || *p != ' ')
        return;
    long slot = (long)(who - first_index);
    if (slot < 0 || slot >= total_clients)
        return;
    struct client *sender = by_index[slot];
    if (!sender || !sender->sender || (!irc && sender != watcher))
        return;
    sender->outstanding--;
    echoes++;
    if (at >= t_start && at < t_end)
        window_echoes++;
    if (stamp >= t_start && stamp < t_end)
        keep_latency(at - stamp);
    if (sending && at < t_end && sender->state == ONLINE)
        send_single(sender);
}

/* One whole line (its head) of a client, received at `at`. */
static void on_line(struct client *c, const char *line, int64_t at)
{
    if (c->state == LOGIN) {
        if (irc) {
            /* The numeric is the second word (":server 366 ..."): not
             * anywhere in the line, or "There are 433 users" refuses u00432. */
            const char *numeric = strchr(line, ' ');
            if (numeric && !strncmp(numeric, " 366 ", 5)) /* end of NAMES: joined */
                goto online;
            if (!strncmp(line, "ERROR", 5) || (numeric && !strncmp(numeric, " 433 ", 5)))
                fail(c, line);
        } else {
            if (!strncmp(line, "OK LOGIN", 8))
                c->ok_login = 1;
            else if (!strncmp(line, "USERS ", 6))
                c->users = 1;
            else if (!strncmp(line, "ERR ", 4) || !strncmp(line, "BYE ", 4))
                fail(c, line);
            if (c->ok_login && c->users)
                goto online;
        }
        return;
    online:
        c->state = ONLINE;
        pending--;
        return;
    }
    lines++;
    if (closed) {
        /* As loadgen.py: a line counts in the window if it arrived there. */
        if (at >= t_start && at < t_end)
            window_lines++;
        if (c->watcher)
            on_said(c, line, at);
        return;
    }
    /* The send time: " T<digits> " (sae MSG) or ":T<digits> " (IRC), as
     * loadgen.SEND_TIME; the first one in the line. */
    for (const char *p = line; (p = strchr(p, 'T')) != NULL; p++) {
        if (p == line || (p[-1] != ' ' && p[-1] != ':') || p[1] < '0' || p[1] > '9')
            continue;
        int64_t v = 0;
        const char *q = p + 1;
        while (*q >= '0' && *q <= '9')
            v = v * 10 + (*q++ - '0');
        if (*q == ' ') {
            record(v, at);
            return;
        }
    }
}

static void on_readable(struct client *c)
{
    static char buf[RECV_BYTES];
    for (;;) {
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return;
            fail(c, strerror(errno));
            return;
        }
        if (n == 0) {
            fail(c, "closed by the server");
            return;
        }
        /* One clock read per recv, as the Python generator takes one per event. */
        int64_t at = now_ns();
        if (closed && c->state == ONLINE && !c->watcher) {
            /* A plain receiver of the closed loop only counts its lines
             * (as loadgen.py's bytes.count): memchr, not a byte loop,
             * since nearly every delivery of the run ends here. */
            long long found = 0;
            for (const char *p = buf, *end = buf + n; (p = memchr(p, '\n', end - p)) != NULL; p++)
                found++;
            lines += found;
            if (at >= t_start && at < t_end)
                window_lines += found;
        } else {
            for (ssize_t i = 0; i < n && c->state != FAILED; i++) {
                char ch = buf[i];
                if (ch == '\n') {
                    c->head[c->head_len] = 0;
                    on_line(c, c->head, at);
                    c->head_len = 0;
                } else if (c->head_len < HEAD && ch != '\r') {
                    c->head[c->head_len++] = ch;
                }
            }
        }
        if (c->state == FAILED || n < (ssize_t)sizeof buf)
            return;
    }
}

static void start_connect(struct client *c, int port)
{
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0)
        die("socket");
    int one = 1;
    /* Like loadgen.py: each chat line leaves at once, not batched by Nagle. */
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->state = CONNECTING;
    pending++;
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
        fail(c, strerror(errno));
        return;
    }
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        die("epoll_ctl");
}

static void on_connected(struct client *c)
{
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
        fail(c, strerror(err));
        return;
    }
    char msg[256];
    int n = irc ? snprintf(msg, sizeof msg, "NICK u%05d\r\nUSER u%05d 0 * :u%05d\r\nJOIN " CHANNEL "\r\n",
                           c->index, c->index, c->index)
                : snprintf(msg, sizeof msg, "LOGIN u%05d " PASSWORD "\n", c->index);
    if (send(c->fd, msg, n, MSG_NOSIGNAL) != n) {
        fail(c, "login send");
        return;
    }
    c->state = LOGIN;
    set_events(c, EPOLLIN);
}

/* The parent's "go <ns>" (PARTS > 1); end of input before it is an error. */
static void on_stdin(void)
{
    ssize_t n = read(0, go_line + go_len, sizeof go_line - 1 - go_len);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        fprintf(stderr, "stdin closed before \"go\"\n");
        exit(1);
    }
    go_len += n;
    go_line[go_len] = 0;
    long long at;
    if (strchr(go_line, '\n') && sscanf(go_line, "go %lld", &at) == 1)
        go_at = at;
    else if (strchr(go_line, '\n') || go_len == sizeof go_line - 1) {
        fprintf(stderr, "expected \"go <ns>\" on stdin, got: %s\n", go_line);
        exit(1);
    }
}

/* One epoll turn over the sockets; the timerfd (data.ptr NULL) only wakes it. */
static void poll_once(int timeout_ms)
{
    struct epoll_event evs[512];
    int n = epoll_wait(epfd, evs, 512, timeout_ms);
    if (n < 0 && errno != EINTR)
        die("epoll_wait");
    for (int i = 0; i < n; i++) {
        struct client *c = evs[i].data.ptr;
        if (!c)
            continue; /* the timer: main() reads it after this turn */
        if (evs[i].data.ptr == &stdin_tag) {
            on_stdin();
            continue;
        }
        if (c->state == CONNECTING) {
            on_connected(c);
            continue;
        }
        if (c->state != FAILED && evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
            on_readable(c);
        if (c->state != FAILED && evs[i].events & EPOLLOUT && c->wlen)
            on_writable(c);
    }
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest rank, as loadgen.percentiles, of a sorted array. */
static double pct_ms(const int64_t *v, size_t n, double p)
{
    if (!n)
        return -1;
    long r = (long)(p / 100.0 * n + 0.5 + 0.5) - 1; /* int(round(p/100*n + 0.5)) - 1 */
    if (r < 0)
        r = 0;
    if (r >= (long)n)
        r = n - 1;
    return v[r] / 1e6;
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* Kernel time only: receiving is mostly system calls, which a C generator
 * pays as much as a Python one. */
static double sys_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static int usage(const char *self)
{
    fprintf(stderr,
            "usage: %s sae|irc PORT CLIENTS SENDERS RATE WARMUP SECONDS FIRST_INDEX CONCURRENCY\n"
            "       %s closed sae|irc PORT CLIENTS SENDERS WINDOW WARMUP SECONDS FIRST_INDEX CONCURRENCY "
            "[PART PARTS [LATENCY_FILE]]\n",
            self, self);
    return 2;
}

int main(int argc, char **argv)
{
    closed = argc > 1 && !strcmp(argv[1], "closed");
    char **arg = argv + closed; /* the arguments both modes share start at arg[1] */
    int nargs = argc - closed;
    if (closed ? (nargs != 10 && nargs != 12 && nargs != 13) : nargs != 10)
        return usage(argv[0]);
    irc = !strcmp(arg[1], "irc");
    int port = atoi(arg[2]);
    total_clients = atoi(arg[3]);
    int senders = atoi(arg[4]);
    double rate = atof(arg[5]), warmup = atof(arg[6]), seconds = atof(arg[7]);
    first_index = atoi(arg[8]);
    int concurrency = atoi(arg[9]);
    int part = nargs >= 12 ? atoi(arg[10]) : 0, parts = nargs >= 12 ? atoi(arg[11]) : 1;
    const char *latency_file = nargs == 13 ? arg[12] : NULL;
    window_msgs = (int)rate;
    if (senders < 1 || senders > total_clients || rate <= 0 || (closed && window_msgs < 1) || parts < 1 ||
        part < 0 || part >= parts)
        return usage(argv[0]);

    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max; /* 1000s of sockets */
    setrlimit(RLIMIT_NOFILE, &rl);

    /* This process's share of the room: clients part, part + parts, ...
     * (all of them with one part), as loadgen.run deals them round-robin,
     * so that every process has some senders. */
    nclients = (total_clients - part + parts - 1) / parts;
    clients = calloc(nclients, sizeof *clients);
    by_index = calloc(total_clients, sizeof *by_index);
    epfd = epoll_create1(0);
    /* A timerfd at the next due time: epoll_wait's timeout is whole
     * milliseconds, the spacing of the sends should not be. */
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    if (!clients || !by_index || epfd < 0 || tfd < 0)
        die("setup");
    struct epoll_event tev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, tfd, &tev);
    int local_senders = 0;
    for (int k = 0; k < nclients; k++) {
        int i = part + k * parts;
        struct client *c = &clients[k];
        c->fd = -1;
        c->index = first_index + i;
        c->sender = i < senders;
        by_index[i] = c;
        if (c->sender && closed) {
            local_senders++;
            c->watcher = !irc;
            c->wbuf = malloc(window_msgs * LINE_MAX);
            if (!c->wbuf)
                die("malloc");
        }
    }
    if (closed && irc && local_senders) {
        /* The first receiver of this process watches for its senders'
         * messages: one of the room's members, so the room is as big as
         * with sae, and what it times is one delivery of the fan-out, as a
         * sae sender's own echo is. */
        int k = 0;
        while (k < nclients && clients[k].sender)
            k++;
        if (k == nclients) {
            fprintf(stderr, "the closed loop on irc needs a receiver in every process with senders\n");
            return 1;
        }
        clients[k].watcher = 1;
    }

    /* Setup: at most `concurrency` logins in flight (miniircd's listen
     * backlog is 5), bounded to 180 s like loadgen.py. */
    int64_t deadline = now_ns() + 180LL * 1000000000;
    int next = 0;
    while ((next < nclients || pending) && now_ns() < deadline) {
        while (next < nclients && pending < concurrency)
            start_connect(&clients[next++], port);
        poll_once(50);
    }
    int online = 0;
    for (int i = 0; i < nclients; i++)
        online += clients[i].state == ONLINE;
    if (online < nclients) {
        fprintf(stderr, "only %d of %d clients logged in\n", online, nclients);
        return 1;
    }

    int64_t t_send;
    if (parts > 1) {
        /* The other processes' logins are still coming in (JOIN lines):
         * keep reading until the parent, with everyone in, says when. */
        printf("ready\n");
        fflush(stdout);
        struct epoll_event sev = {.events = EPOLLIN, .data.ptr = &stdin_tag};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, 0, &sev) < 0)
            die("epoll_ctl stdin");
        deadline = now_ns() + 300LL * 1000000000;
        while (!go_at && now_ns() < deadline)
            poll_once(1000);
        if (!go_at) {
            fprintf(stderr, "no \"go\" from the parent\n");
            return 1;
        }
        epoll_ctl(epfd, EPOLL_CTL_DEL, 0, NULL);
        t_send = go_at;
    } else {
        t_send = now_ns() + 200000000; /* as loadgen._drive */
    }
    t_start = t_send + (int64_t)(warmup * 1e9);
    t_end = t_start + (int64_t)(seconds * 1e9);
    int64_t t_drain = t_end + 10LL * 1000000000;
    int64_t interval = closed ? 0 : (int64_t)(senders / rate * 1e9);
    /* Fixed load: senders staggered evenly over one interval, as loadgen.py. */
    for (int i = 0; i < nclients && !closed; i++)
        if (clients[i].sender)
            clients[i].next_send = t_send + interval * (clients[i].index - first_index) / senders;
    int said_start = 0, said_end = 0;
    long long last_lines = -1;
    double cpu_start = 0, cpu_window = 0, sys_start = 0, sys_window = 0;
    int64_t quiet_from = 0;
    for (;;) {
        int64_t now = now_ns();
        if (!said_start && now >= t_start) {
            cpu_start = cpu_seconds();
            sys_start = sys_seconds();
            printf("phase=start\n");
            fflush(stdout);
            said_start = 1;
        }
        if (!said_end && now >= t_end) {
            cpu_window = cpu_seconds() - cpu_start;
            sys_window = sys_seconds() - sys_start;
            printf("phase=end\n");
            fflush(stdout);
            said_end = 1;
            sending = 0; /* what is outstanding comes back; nothing new */
        }
        if (now >= t_drain)
            break;
        int64_t due = said_end ? now + 50000000 : (said_start ? t_end : t_start);
        if (closed) {
            if (!sending && !said_end && now >= t_send) {
                sending = 1;
                for (int i = 0; i < nclients; i++)
                    for (int k = 0; k < window_msgs && clients[i].sender && clients[i].state == ONLINE; k++)
                        send_single(&clients[i]);
            } else if (now < t_send) {
                due = t_send;
            }
        } else if (now >= t_send && now < t_end) {
            for (int i = 0; i < nclients; i++) {
                struct client *c = &clients[i];
                if (!c->sender || c->state != ONLINE)
                    continue;
                while (c->next_send <= now) {
                    char msg[256];
                    int n = irc ? snprintf(msg, sizeof msg, "PRIVMSG " CHANNEL " :T%lld " PADDING "\r\n",
                                           (long long)now_ns())
                                : snprintf(msg, sizeof msg, "SAY T%lld " PADDING "\n", (long long)now_ns());
                    int64_t stamp = strtoll(strchr(msg, 'T') + 1, NULL, 10);
                    if (send(c->fd, msg, n, MSG_NOSIGNAL) != n) {
                        fail(c, "send");
                        break;
                    }
                    if (stamp >= t_start && stamp < t_end && nmsgs < MAX_MSGS)
                        msg_sent[nmsgs++] = stamp;
                    sent++;
                    c->next_send += interval;
                }
                if (c->state == ONLINE && c->next_send < due)
                    due = c->next_send;
            }
        } else if (now < t_send) {
            due = t_send;
        }
        if (said_end) {
            /* Drain: done once nothing has arrived for half a second. */
            if (lines != last_lines) {
                last_lines = lines;
                quiet_from = now;
            } else if (now - quiet_from >= 500000000) {
                break;
            }
        }
        struct itimerspec its = {{0, 0}, {due / 1000000000, due % 1000000000}};
        timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
        poll_once(-1);
        uint64_t expirations;
        if (read(tfd, &expirations, sizeof expirations) < 0) {
            /* not expired: woken by a socket */
        }
    }

    qsort(lat, nlat, sizeof *lat, cmp64);
    if (closed) {
        if (latency_file) {
            FILE *f = fopen(latency_file, "wb");
            if (!f || fwrite(lat, sizeof *lat, nlat, f) != nlat || fclose(f))
                die(latency_file);
        }
        long long outstanding = 0;
        for (int i = 0; i < nclients; i++)
            if (clients[i].sender)
                outstanding += clients[i].outstanding;
        /* The window's CPU split in user and system time: in the kernel is
         * what any generator pays for its send() and recv() calls. */
        printf("result p50_ms=%.3f p99_ms=%.3f max_ms=%.3f count=%zu sent=%lld echoes=%lld window_echoes=%lld "
               "lines=%lld window_lines=%lld outstanding=%lld failed=%d clients=%d senders=%d cpu_s=%.2f "
               "window_cpu_s=%.2f window_user_s=%.2f window_sys_s=%.2f\n",
               pct_ms(lat, nlat, 50), pct_ms(lat, nlat, 99), nlat ? lat[nlat - 1] / 1e6 : -1.0, nlat, sent, echoes,
               window_echoes, lines, window_lines, outstanding, failed, nclients, local_senders, cpu_seconds(),
               cpu_window, cpu_window - sys_window, sys_window);
        return 0;
    }
    /* Per message: first arrival, and spread (last - first), over receivers. */
    static int64_t first[MAX_MSGS], spread[MAX_MSGS];
    int nfirst = 0;
    for (int i = 0; i < nmsgs; i++) {
        if (!msg_first[i])
            continue;
        first[nfirst] = msg_first[i] - msg_sent[i];
        spread[nfirst++] = msg_last[i] - msg_first[i];
    }
    qsort(first, nfirst, sizeof *first, cmp64);
    qsort(spread, nfirst, sizeof *spread, cmp64);
    printf("result p50_ms=%.3f p99_ms=%.3f max_ms=%.3f count=%zu sent=%lld lines=%lld failed=%d cpu_s=%.2f "
           "window_cpu_s=%.2f window_sys_s=%.2f first_p50_ms=%.3f first_p99_ms=%.3f spread_p50_ms=%.3f spread_p99_ms=%.3f\n",
           pct_ms(lat, nlat, 50), pct_ms(lat, nlat, 99), nlat ? lat[nlat - 1] / 1e6 : -1.0, nlat, sent, lines,
           failed, cpu_seconds(), cpu_window, sys_window, pct_ms(first, nfirst, 50), pct_ms(first, nfirst, 99),
           pct_ms(spread, nfirst, 50), pct_ms(spread, nfirst, 99));
    return 0;
}
