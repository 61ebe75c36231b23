/* Précis pause: PID 1 of every pod sandbox (holds the namespaces, reaps zombies).
 * Static, no libc at run time beyond what -static links in; the image is FROM scratch. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define VERSION "3.10-precis"

static void sigdown(int signo) {
  (void)signo;
  _exit(0); /* SIGINT/SIGTERM: the runtime tears the sandbox down */
}

static void sigreap(int signo) {
  (void)signo;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  } /* with a shared PID namespace, orphans re-parent to us */
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "-v") == 0) {
    printf("pause %s\n", VERSION);
    return 0;
  }
  if (getpid() != 1) fprintf(stderr, "pause: warning: not PID 1\n");

  /* Block everything except the three signals we handle, so nothing else can stop us. */
  sigset_t set;
  sigfillset(&set);
  sigdelset(&set, SIGINT);
  sigdelset(&set, SIGTERM);
  sigdelset(&set, SIGCHLD);
  sigprocmask(SIG_BLOCK, &set, NULL);

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = sigdown;
  if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0) return 1;
  sa.sa_handler = sigreap;
  sa.sa_flags = SA_NOCLDSTOP;
  if (sigaction(SIGCHLD, &sa, NULL) < 0) return 2;

  for (;;) pause();
  return 42; /* unreachable */
}
