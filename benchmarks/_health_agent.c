/*
 * The agent of bench_health.py: a process that does nothing but send heartbeats.
 *
 *     _health_agent STARTS_FILE INTERVAL_S PHASE_S STATS_FILE
 *
 * On start it appends "PID EPOCHREALTIME" to STARTS_FILE (the line bench_core.py's
 * bash child writes, so the same start-up wait works). When INTERVAL_S > 0 and
 * $HOSTVISOR_HEARTBEAT_SOCKET is set, it connects to that Unix stream socket and writes
 * one JSON line {"pid":PID,"status":"ok"} at once, then at start + PHASE_S + k * INTERVAL_S
 * (PHASE_S = 0: every INTERVAL_S from the start), keeping the connection open and
 * reconnecting when the supervisor has closed it. Otherwise it only sleeps.
 *
 * SIGUSR1 writes "SEQ SENT FAILED CONNECTS" to STATS_FILE (atomically, by rename; SEQ
 * counts the dumps), so the benchmark can count the heartbeats sent in its window
 * without the supervisor's help. SIGTERM ends it (the default action).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t dump_requested;
static unsigned long dumps, sent, failed, connects;

static void on_usr1(int sig) {
    (void)sig;
    dump_requested = 1;
}

static void dump(const char *path) {
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) return;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return;
    dprintf(fd, "%lu %lu %lu %lu\n", ++dumps, sent, failed, connects);
    close(fd);
    rename(tmp, path);
}

static void dump_if_requested(const char *path) {
    if (dump_requested) {
        dump_requested = 0;
        dump(path);
    }
}

static int connect_to(const char *path) {
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path) return -1;
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        close(fd);
        return -1;
    }
    connects++;
    return fd;
}

/* One heartbeat over *fd, reconnecting (once) if the supervisor closed the connection. */
static int beat(int *fd, const char *path, const char *line, size_t len) {
    for (int attempt = 0; attempt < 2; attempt++) {
        if (*fd >= 0) {
            char c;
            ssize_t got = recv(*fd, &c, 1, MSG_DONTWAIT);
            if (got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
                close(*fd); /* closed by the supervisor (or broken): start over */
                *fd = -1;
            }
        }
        if (*fd < 0) *fd = connect_to(path);
        if (*fd < 0) continue;
        if (send(*fd, line, len, MSG_NOSIGNAL) == (ssize_t)len) return 1;
        close(*fd);
        *fd = -1;
    }
    return 0;
}

static void add_seconds(struct timespec *t, double seconds) {
    long long ns = t->tv_nsec + (long long)(seconds * 1e9);
    t->tv_sec += (time_t)(ns / 1000000000LL);
    t->tv_nsec = (long)(ns % 1000000000LL);
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s STARTS_FILE INTERVAL_S PHASE_S STATS_FILE\n", argv[0]);
        return 2;
    }
    const char *stats = argv[4];
    double interval = atof(argv[2]), phase = atof(argv[3]);

    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    FILE *starts = fopen(argv[1], "a");
    if (starts == NULL) return 1;
    fprintf(starts, "%d %lld.%06ld\n", (int)getpid(), (long long)now.tv_sec, now.tv_nsec / 1000);
    fclose(starts);

    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_usr1; /* no SA_RESTART: the sleep returns EINTR */
    sigaction(SIGUSR1, &action, NULL);

    const char *path = getenv("HOSTVISOR_HEARTBEAT_SOCKET");
    if (interval <= 0 || path == NULL || *path == '\0') {
        for (;;) {
            pause();
            dump_if_requested(stats);
        }
    }

    char line[64];
    int len = snprintf(line, sizeof line, "{\"pid\":%d,\"status\":\"ok\"}\n", (int)getpid());
    int fd = -1;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    if (beat(&fd, path, line, (size_t)len)) sent++; else failed++;
    add_seconds(&next, phase > 0 ? phase : interval);
    for (;;) {
        int rc = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
        dump_if_requested(stats);
        if (rc == EINTR) continue;
        if (beat(&fd, path, line, (size_t)len)) sent++; else failed++;
        add_seconds(&next, interval);
    }
}
