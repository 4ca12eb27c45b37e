/*
 * Fixed-load latency generator in C, for one regime only: N clients in the
 * room, S of them sending R messages/s in total, evenly spaced, each line
 * carrying its CLOCK_MONOTONIC send time (T<ns>); every client reads and
 * parses every line and records send-to-delivery latency.
 *
 * Why it exists: loadgen.py spreads 1000 receiving sockets over 2 Python
 * processes on the same 2 cores as the server; this one does the same work
 * in one epoll loop at a small fraction of the CPU, so if the latencies it
 * measures are much lower, the Python generator was adding them.
 *
 * Built at run time by bench_load.py (cc -O2 -std=c99), libc only:
 *   loadgen_c sae|irc PORT CLIENTS SENDERS RATE WARMUP SECONDS FIRST_INDEX CONCURRENCY
 * Prints "phase=start" and "phase=end" at the measured window's edges (so
 * the caller can read the server's CPU time there), then one result line:
 *   result p50_ms=.. p99_ms=.. max_ms=.. count=.. sent=.. lines=.. failed=..
 * Errors go to stderr with exit status 1.
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

enum { NEW, CONNECTING, LOGIN, ONLINE, FAILED };

struct client {
    int fd, state, sender;
    int ok_login, users;     /* sae: both seen means logged in */
    int head_len;            /* bytes of the current line kept in head */
    int64_t next_send;       /* senders: next due time, ns */
    char head[HEAD + 1];
};

static int irc;
static struct client *clients;
static int nclients, epfd, failed, pending;
static int64_t *lat;          /* latencies of messages sent inside the window, ns */
static size_t nlat, caplat;
static int64_t t_start, t_end;
static long long lines, sent;
/* Every message sent inside the window, in send order (one thread: the
 * times increase), with its first and last arrival over all receivers:
 * the first is the server's turnaround (read, store, first send), last
 * minus first the spread of its pass over the room. */
#define MAX_MSGS 100000
static int64_t msg_sent[MAX_MSGS], msg_first[MAX_MSGS], msg_last[MAX_MSGS];
static int nmsgs;

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
        fprintf(stderr, "client %ld: %s\n", (long)(c - clients), why);
    failed++;
    c->state = FAILED;
    if (c->fd >= 0) {
        close(c->fd); /* also takes it out of the epoll set */
        c->fd = -1;
    }
}

static void record(int64_t sent_ns, int64_t at)
{
    /* As loadgen.latency_ms: only messages sent inside the window count. */
    if (sent_ns < t_start || sent_ns >= t_end)
        return;
    if (nlat == caplat) {
        caplat = caplat ? caplat * 2 : 1 << 20;
        lat = realloc(lat, caplat * sizeof *lat);
        if (!lat)
            die("realloc");
    }
    lat[nlat++] = at - sent_ns;
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

static void on_connected(struct client *c, int index)
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
                           index, index, index)
                : snprintf(msg, sizeof msg, "LOGIN u%05d " PASSWORD "\n", index);
    if (send(c->fd, msg, n, 0) != n) {
        fail(c, "login send");
        return;
    }
    c->state = LOGIN;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* One epoll turn over the sockets; the timerfd (data.ptr NULL) only wakes it. */
static void poll_once(int timeout_ms, int first_index)
{
    struct epoll_event evs[512];
    int n = epoll_wait(epfd, evs, 512, timeout_ms);
    if (n < 0 && errno != EINTR)
        die("epoll_wait");
    for (int i = 0; i < n; i++) {
        struct client *c = evs[i].data.ptr;
        if (!c)
            continue; /* the timer: main() reads it after this turn */
        if (c->state == CONNECTING)
            on_connected(c, first_index + (int)(c - clients));
        else if (c->state != FAILED)
            on_readable(c);
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

int main(int argc, char **argv)
{
    if (argc != 10) {
        fprintf(stderr, "usage: %s sae|irc PORT CLIENTS SENDERS RATE WARMUP SECONDS FIRST_INDEX CONCURRENCY\n",
                argv[0]);
        return 2;
    }
    irc = !strcmp(argv[1], "irc");
    int port = atoi(argv[2]);
    nclients = atoi(argv[3]);
    int senders = atoi(argv[4]);
    double rate = atof(argv[5]), warmup = atof(argv[6]), seconds = atof(argv[7]);
    int first_index = atoi(argv[8]), concurrency = atoi(argv[9]);
    if (senders < 1 || senders > nclients || rate <= 0)
        return 2;

    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max; /* 1000s of sockets */
    setrlimit(RLIMIT_NOFILE, &rl);

    clients = calloc(nclients, sizeof *clients);
    epfd = epoll_create1(0);
    /* A timerfd at the next send time: epoll_wait's timeout is whole
     * milliseconds, the spacing of the sends should not be. */
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    if (!clients || epfd < 0 || tfd < 0)
        die("setup");
    struct epoll_event tev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, tfd, &tev);
    for (int i = 0; i < nclients; i++) {
        clients[i].fd = -1;
        clients[i].sender = i < senders;
    }

    /* Setup: at most `concurrency` logins in flight (miniircd's listen
     * backlog is 5), bounded to 180 s like loadgen.py. */
    int64_t deadline = now_ns() + 180LL * 1000000000;
    int next = 0;
    while ((next < nclients || pending) && now_ns() < deadline) {
        while (next < nclients && pending < concurrency)
            start_connect(&clients[next++], port);
        poll_once(50, first_index);
    }
    int online = 0;
    for (int i = 0; i < nclients; i++)
        online += clients[i].state == ONLINE;
    if (online < nclients) {
        fprintf(stderr, "only %d of %d clients logged in\n", online, nclients);
        return 1;
    }

    int64_t t_send = now_ns() + 200000000; /* as loadgen._drive */
    t_start = t_send + (int64_t)(warmup * 1e9);
    t_end = t_start + (int64_t)(seconds * 1e9);
    int64_t t_drain = t_end + 10LL * 1000000000;
    int64_t interval = (int64_t)(senders / rate * 1e9);
    /* Senders staggered evenly over one interval, as loadgen.py. */
    for (int i = 0; i < senders; i++)
        clients[i].next_send = t_send + interval * i / senders;
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
        }
        if (now >= t_drain)
            break;
        int64_t due = said_end ? now + 50000000 : (said_start ? t_end : t_start);
        if (now >= t_send && now < t_end) {
            for (int i = 0; i < senders; i++) {
                struct client *c = &clients[i];
                if (c->state != ONLINE)
                    continue;
                while (c->next_send <= now) {
                    char msg[256];
                    int n = irc ? snprintf(msg, sizeof msg, "PRIVMSG " CHANNEL " :T%lld " PADDING "\r\n",
                                           (long long)now_ns())
                                : snprintf(msg, sizeof msg, "SAY T%lld " PADDING "\n", (long long)now_ns());
                    int64_t stamp = strtoll(strchr(msg, 'T') + 1, NULL, 10);
                    if (send(c->fd, msg, n, 0) != n) {
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
        poll_once(-1, first_index);
        uint64_t expirations;
        if (read(tfd, &expirations, sizeof expirations) < 0) {
            /* not expired: woken by a socket */
        }
    }

    qsort(lat, nlat, sizeof *lat, cmp64);
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
