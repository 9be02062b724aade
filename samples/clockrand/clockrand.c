/* clockrand: prints what the sandbox's clocks and random source return, to show they are
 * deterministic: realtime and monotonic clock readings, their resolutions, time(), and
 * 16 bytes from getentropy() (random_get), then sleeps 5 ms (poll_oneoff) and reads the clock again. */
#include <stdio.h>
#include <time.h>
#include <unistd.h>

int main(void) {
    struct timespec rt, mono, res;
    clock_gettime(CLOCK_REALTIME, &rt);
    clock_gettime(CLOCK_MONOTONIC, &mono);
    clock_getres(CLOCK_MONOTONIC, &res);
    printf("realtime=%lld.%09ld\n", (long long)rt.tv_sec, rt.tv_nsec);
    printf("monotonic=%lld.%09ld res=%ld\n", (long long)mono.tv_sec, mono.tv_nsec, res.tv_nsec);
    printf("time=%lld\n", (long long)time(NULL));
    unsigned char buf[16];
    if (getentropy(buf, sizeof buf) != 0) { printf("getentropy failed\n"); return 1; }
    printf("random=");
    for (int i = 0; i < 16; i++) printf("%02x", buf[i]);
    printf("\n");
    usleep(5000);
    clock_gettime(CLOCK_MONOTONIC, &mono);
    printf("after-sleep=%lld.%09ld\n", (long long)mono.tv_sec, mono.tv_nsec);
    return 0;
}
