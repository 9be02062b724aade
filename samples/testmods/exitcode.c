/* exitcode: echoes stdin to stdout, writes a note to stderr, exits with argv[1] (default 3). */
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    int c;
    while ((c = getchar()) != EOF) putchar(c);
    fprintf(stderr, "argc=%d\n", argc);
    exit(argc > 1 ? atoi(argv[1]) : 3);
}
