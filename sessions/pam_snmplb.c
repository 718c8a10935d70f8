/* pam_snmplb: choose this login's application server before LTSP's pamltsp runs.
 *
 * Current LTSP (19+, Debian 12's ltsp 23.02) authenticates a login, and mounts an SSHFS home, over ssh
 * to $SSH_SERVER: pamltsp, run by pam_exec, sources /etc/ltsp/pamltsp.conf, which `ltsp init` writes
 * once per boot. pam_exec gives pamltsp the PAM handle's environment (pam_getenvlist) and nothing
 * else, and a program that pam_exec runs cannot change that environment. This module can: it runs
 * snmplb's hook (default /usr/libexec/snmplb/snmplb-pam-ssh-server, which runs
 * `snmplb pick --user "$PAM_USER"`), takes the host the hook prints on its first line, and puts it in
 * THIS handle's environment as SNMPLB_SSH_SERVER. The line that `snmplb-ssh-server --per-login` adds
 * to pamltsp.conf sets SSH_SERVER from it. Each login has its own PAM handle, so two logins at the same
 * time on one client never see each other's choice (no file, no shared state).
 *
 *   auth     optional  pam_snmplb.so [timeout_ms=N] [hook=/path]   (before pamltsp's auth line)
 *   session  optional  pam_snmplb.so [timeout_ms=N] [hook=/path]   (autologin: no auth step)
 *
 * It never fails a login: every function returns PAM_IGNORE. When the hook prints nothing usable,
 * exits non-zero, or is still running after timeout_ms (default 3000; it is killed with its process
 * group), SNMPLB_SSH_SERVER is removed from the handle and pamltsp's own SSH_SERVER applies. The
 * session step runs the hook only when no auth step of the same handle ran it (autologin): one wait
 * per login at most, and the session keeps the server the password was checked on.
 *
 * The hook gets no secret: the module never reads PAM_AUTHTOK, never runs it for a user name that NSS
 * does not know (a password typed in the name field would reach a command line); the hook's standard input is
 * /dev/null, its environment only PATH, PAM_USER, PAM_SERVICE and PAM_TYPE (never the application's
 * or the PAM handle's environment, which a user may influence), every other file descriptor closed.
 * It runs only as root (a display manager's login): as a user (a screen locker) it does nothing.
 * Logs: syslog (authpriv), through pam_syslog.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#define PAM_SM_AUTH
#define PAM_SM_SESSION
#include <security/pam_appl.h>
#include <security/pam_ext.h>
#include <security/pam_modules.h>

#define DEFAULT_HOOK "/usr/libexec/snmplb/snmplb-pam-ssh-server"
#define DEFAULT_TIMEOUT_MS 3000
#define MAX_TIMEOUT_MS 60000
#define ENV_NAME "SNMPLB_SSH_SERVER"
#define MAX_HOST 253
#define MAX_USER 256
#define TRIED "snmplb_tried" /* pam_set_data: this handle has run the hook once */

struct options {
    const char *hook;
    long timeout_ms;
};

static void parse_options(pam_handle_t *pamh, int argc, const char **argv, struct options *opt)
{
    opt->hook = DEFAULT_HOOK;
    opt->timeout_ms = DEFAULT_TIMEOUT_MS;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "hook=", 5) == 0) {
            if (a[5] == '/')
                opt->hook = a + 5;
            else
                pam_syslog(pamh, LOG_ERR, "hook= must be an absolute path: the default %s is used", DEFAULT_HOOK);
        } else if (strncmp(a, "timeout_ms=", 11) == 0) {
            char *end = NULL;
            errno = 0;
            long v = strtol(a + 11, &end, 10);
            if (errno == 0 && end != a + 11 && *end == '\0' && v >= 1 && v <= MAX_TIMEOUT_MS)
                opt->timeout_ms = v;
            else
                pam_syslog(pamh, LOG_ERR, "timeout_ms= must be 1 to %d (ms): the default %d is used",
                           MAX_TIMEOUT_MS, DEFAULT_TIMEOUT_MS);
        } else {
            pam_syslog(pamh, LOG_ERR, "unknown option %.40s ignored (options: hook=PATH, timeout_ms=N)", a);
        }
    }
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A user name that is safe to hand on: printable ASCII or UTF-8 bytes, no control character, not an
 * option. */
static int good_user(const char *user)
{
    size_t n = strlen(user);
    if (n == 0 || n > MAX_USER || user[0] == '-')
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)user[i];
        if (c < 0x20 || c == 0x7f)
            return 0;
    }
    return 1;
}

/* A plain host name or address, as pamltsp.conf's line accepts it: [A-Za-z0-9.:_-], not an option. */
static int good_host(const char *host)
{
    size_t n = strlen(host);
    if (n == 0 || n > MAX_HOST || host[0] == '-')
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = host[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == ':' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* After fork: only async-signal-safe calls (the application may have threads); everything else was
 * prepared before the fork. */
static void child(const char *hook, char *const envp[], long max_fd, int out)
{
    /* Own process group, so that a timeout kills the hook and everything it started. */
    setpgid(0, 0);
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    for (int s = 1; s < NSIG; s++)
        signal(s, SIG_DFL);
    int null = open("/dev/null", O_RDWR);
    if (null < 0 || dup2(null, 0) < 0 || dup2(out, 1) < 0 || dup2(null, 2) < 0)
        _exit(127);
    /* Every other descriptor of the application (sockets, the display manager's pipes) closed. */
    for (int fd = 3; fd < max_fd; fd++)
        close(fd);
    char *argvp[] = {(char *)hook, NULL};
    execve(hook, argvp, envp);
    _exit(127);
}

/* Run the hook; on success put its host in the handle's environment, else remove ENV_NAME from it. */
static void choose(pam_handle_t *pamh, int argc, const char **argv, const char *type)
{
    struct options opt;
    parse_options(pamh, argc, argv, &opt);
    pam_set_data(pamh, TRIED, (void *)TRIED, NULL);
    long deadline = now_ms() + opt.timeout_ms;

    if (geteuid() != 0) {
        pam_syslog(pamh, LOG_DEBUG, "not root (a screen locker?): pamltsp's SSH_SERVER applies");
        return;
    }
    const char *user = NULL;
    if (pam_get_user(pamh, &user, NULL) != PAM_SUCCESS || user == NULL || !good_user(user)) {
        pam_putenv(pamh, ENV_NAME);
        pam_syslog(pamh, LOG_NOTICE, "no usable user name: pamltsp's SSH_SERVER applies");
        return;
    }
    /* A name nobody has may be a password typed in the wrong field: it goes on no command line and into
     * no log (pamltsp refuses the login by itself). */
    struct passwd pw, *found = NULL;
    char pwbuf[4096];
    if (getpwnam_r(user, &pw, pwbuf, sizeof pwbuf, &found) != 0 || found == NULL) {
        pam_putenv(pamh, ENV_NAME);
        pam_syslog(pamh, LOG_NOTICE, "an unknown user: nothing chosen, pamltsp's SSH_SERVER applies");
        return;
    }
    const void *item = NULL;
    const char *service = "";
    if (pam_get_item(pamh, PAM_SERVICE, &item) == PAM_SUCCESS && item != NULL)
        service = item;

    char e_user[MAX_USER + 16], e_service[128], e_type[64];
    snprintf(e_user, sizeof e_user, "PAM_USER=%s", user);
    snprintf(e_service, sizeof e_service, "PAM_SERVICE=%s", service);
    snprintf(e_type, sizeof e_type, "PAM_TYPE=%s", type);
    char *envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", e_user, e_service, e_type, NULL};
    long max_fd = sysconf(_SC_OPEN_MAX);
    if (max_fd < 0 || max_fd > 65536)
        max_fd = 65536;

    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        pam_putenv(pamh, ENV_NAME);
        pam_syslog(pamh, LOG_ERR, "pipe: %m: pamltsp's SSH_SERVER applies");
        return;
    }
    /* The application may have set SIGCHLD to SIG_IGN (children reaped by the kernel): restore the
     * default meanwhile, so that waitpid sees the hook's status. */
    struct sigaction dfl, old;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(SIGCHLD, &dfl, &old);
    pid_t pid = fork();
    if (pid == 0)
        child(opt.hook, envp, max_fd, fds[1]);
    close(fds[1]);
    if (pid < 0) {
        close(fds[0]);
        sigaction(SIGCHLD, &old, NULL);
        pam_putenv(pamh, ENV_NAME);
        pam_syslog(pamh, LOG_ERR, "fork: %m: pamltsp's SSH_SERVER applies");
        return;
    }
    setpgid(pid, pid); /* also here: no race with the kill below */

    char buf[MAX_HOST + 2];
    size_t len = 0;
    int eof = 0, timed_out = 0;
    while (!eof) {
        long left = deadline - now_ms();
        if (left <= 0) {
            timed_out = 1;
            break;
        }
        struct pollfd p = {.fd = fds[0], .events = POLLIN};
        int r = poll(&p, 1, (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            timed_out = (r == 0);
            break;
        }
        char chunk[256];
        ssize_t n = read(fds[0], chunk, sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            eof = 1;
            break;
        }
        for (ssize_t i = 0; i < n; i++)
            if (len < sizeof buf)
                buf[len++] = chunk[i]; /* the rest is read away, not kept */
    }
    close(fds[0]);

    int status = -1;
    if (!timed_out) {
        /* Its output is complete; it exits at once (bounded by the same deadline). */
        for (;;) {
            pid_t w = waitpid(pid, &status, WNOHANG);
            if (w == pid)
                break;
            if (w < 0 && errno != EINTR) {
                status = -1;
                break;
            }
            if (now_ms() >= deadline) {
                timed_out = 1;
                break;
            }
            struct timespec ts = {0, 5 * 1000000};
            nanosleep(&ts, NULL);
        }
    }
    if (timed_out) {
        kill(-pid, SIGKILL);
        kill(pid, SIGKILL);
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
        sigaction(SIGCHLD, &old, NULL);
        pam_putenv(pamh, ENV_NAME);
        pam_syslog(pamh, LOG_WARNING, "%s did not answer within %ld ms (killed): pamltsp's SSH_SERVER applies",
                   opt.hook, opt.timeout_ms);
        return;
    }
    sigaction(SIGCHLD, &old, NULL);
    if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        pam_putenv(pamh, ENV_NAME);
        if (status != -1 && WIFEXITED(status))
            pam_syslog(pamh, LOG_NOTICE, "%s exit status %d: no server chosen, pamltsp's SSH_SERVER applies",
                       opt.hook, WEXITSTATUS(status));
        else
            pam_syslog(pamh, LOG_NOTICE, "%s failed: no server chosen, pamltsp's SSH_SERVER applies", opt.hook);
        return;
    }
    /* The first line, ended by a newline. */
    char *nl = memchr(buf, '\n', len);
    if (nl == NULL) {
        pam_putenv(pamh, ENV_NAME);
        pam_syslog(pamh, LOG_NOTICE, "%s printed no line: pamltsp's SSH_SERVER applies", opt.hook);
        return;
    }
    *nl = '\0';
    if (!good_host(buf)) {
        pam_putenv(pamh, ENV_NAME);
        pam_syslog(pamh, LOG_WARNING, "%s did not print a host name: pamltsp's SSH_SERVER applies", opt.hook);
        return;
    }
    char env[sizeof ENV_NAME + MAX_HOST + 2];
    snprintf(env, sizeof env, "%s=%s", ENV_NAME, buf);
    if (pam_putenv(pamh, env) != PAM_SUCCESS) {
        pam_syslog(pamh, LOG_ERR, "could not set %s: pamltsp's SSH_SERVER applies", ENV_NAME);
        pam_putenv(pamh, ENV_NAME);
        return;
    }
    pam_syslog(pamh, LOG_INFO, "SSH_SERVER for %s's login (%s): %s", user, type, buf);
}

PAM_EXTERN int pam_sm_authenticate(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    (void)flags;
    choose(pamh, argc, argv, "auth");
    return PAM_IGNORE;
}

PAM_EXTERN int pam_sm_setcred(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    (void)pamh, (void)flags, (void)argc, (void)argv;
    return PAM_IGNORE;
}

PAM_EXTERN int pam_sm_open_session(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    (void)flags;
    /* After this handle's auth step ran, the session keeps its outcome (pamltsp's session step mounts
     * the home from the server the auth step checked the password with). */
    const void *tried = NULL;
    if (pam_get_data(pamh, TRIED, &tried) != PAM_SUCCESS || tried == NULL)
        choose(pamh, argc, argv, "open_session");
    return PAM_IGNORE;
}

PAM_EXTERN int pam_sm_close_session(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    (void)pamh, (void)flags, (void)argc, (void)argv;
    return PAM_IGNORE;
}
