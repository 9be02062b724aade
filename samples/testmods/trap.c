/* trap: integer division by zero (argv[1] = "0" by default), which WebAssembly turns into a trap. */
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    volatile int d = argc > 1 ? atoi(argv[1]) : 0;
    printf("before\n");
    fflush(stdout);
    printf("%d\n", 100 / d);
    return 0;
}
