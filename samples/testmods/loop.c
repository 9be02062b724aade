/* loop: spins forever without calling the host; only fuel or a deadline stops it. */
int main(void) {
    volatile unsigned long long n = 0;
    for (;;) n++;
}
