/* recurse: unbounded recursion, which overflows the WebAssembly stack. */
#include <stdio.h>
__attribute__((noinline)) static unsigned long down(volatile unsigned long n) {
    volatile char pad[256];
    pad[n & 255] = (char)n;
    return down(n + 1) + pad[(n + 1) & 255];
}
int main(void) { printf("%lu\n", down(0)); return 0; }
