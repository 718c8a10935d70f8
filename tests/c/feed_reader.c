/* A small C greeter stand-in: reads snmplb feed messages and prints what it parsed.
 *
 *   feed_reader QUEUE COUNT TIMEOUT_S   receive COUNT messages from the queue (each within TIMEOUT_S)
 *   feed_reader -                       parse stdin as one message (up to 1 MiB: a test may send more
 *                                       than a queue message holds), from a buffer of its exact size
 *
 * Exit 0 when every message parsed, 3 when one did not, 1 on a system error, 4 when the queue is
 * not the feed's (snmplb_feed_trusted: owned by this user or root, mode 0600 or 0640).
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <time.h>
#include <unistd.h>

#include "snmplb-feed.h"

static struct snmplb_feed feed;

static int show(const char *buf, size_t n)
{
    int i;

    if (snmplb_feed_parse(buf, n, &feed) != 0) {
        printf("unparsable\n");
        return 3;
    }
    printf("refreshed=%lld recommended=%s count=%d\n", feed.refreshed,
           feed.recommended[0] ? feed.recommended : "(none)", feed.count);
    for (i = 0; i < feed.count; i++) {
        const struct snmplb_feed_server *s = &feed.servers[i];
        printf("%s|%s|usable=%d|load=%.2f|free=%ld|sessions=%ld|ms=%s|reason=%s\n", s->host, s->state,
               s->usable, s->load_per_cpu, s->free_mib, s->sessions, s->answer_ms >= 0 ? "yes" : "no",
               s->reason);
    }
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    static char buf[SNMPLB_FEED_MSGSIZE + 1];
    int i, count, rc = 0;
    mqd_t q;

    if (argc == 2 && strcmp(argv[1], "-") == 0) {
        static char in[1 << 20];
        size_t n = fread(in, 1, sizeof in, stdin);
        char *exact = malloc(n ? n : 1);  /* exactly the message: a sanitizer sees any read past it */

        if (!exact)
            return 1;
        memcpy(exact, in, n);
        rc = show(exact, n);
        free(exact);
        return rc;
    }
    if (argc != 4)
        return 1;
    q = mq_open(argv[1], O_RDONLY);
    if (q == (mqd_t)-1) {
        printf("mq_open: %s\n", strerror(errno));
        return 1;
    }
    if (snmplb_feed_trusted(q, getuid()) != 0) {
        printf("untrusted queue: not the feed's\n");
        mq_close(q);
        return 4;
    }
    count = atoi(argv[2]);
    for (i = 0; i < count; i++) {
        struct timespec until;
        ssize_t n;

        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += atoi(argv[3]);
        n = mq_timedreceive(q, buf, sizeof buf, NULL, &until);
        if (n < 0) {
            printf("mq_receive: %s\n", strerror(errno));
            return 1;
        }
        rc |= show(buf, (size_t)n);
    }
    mq_close(q);
    return rc;
}
