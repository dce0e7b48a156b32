/*
 * Preloaded into plain mosquitto by run_connections.py's "plain-thread"
 * configuration: starts one thread that only sleeps, and does nothing else.
 * It measures what any second thread in the broker's process costs, whoever
 * starts it: glibc's malloc takes a lock-free path only while a process has
 * a single thread (docs/performance.md).
 */
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

static void *sleep_forever(void *arg) {
    (void)arg;
    for (;;) pause();
    return NULL;
}

__attribute__((constructor)) static void start_idle_thread(void) {
    pthread_t thread;
    if (pthread_create(&thread, NULL, sleep_forever, NULL) != 0) {
        fputs("devcert_idle_thread: cannot start the idle thread\n", stderr);
        return;
    }
    pthread_detach(thread);
}
