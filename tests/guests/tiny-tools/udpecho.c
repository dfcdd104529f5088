/* udpecho PORT: answer each UDP datagram on PORT with "TINY-UDP-<PORT> <datagram>".
 * The tiny guest's busybox has no UDP server; this is built static into its initramfs. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: udpecho PORT\n");
        return 2;
    }
    int port = atoi(argv[1]);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in local = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = INADDR_ANY};
    if (fd < 0 || bind(fd, (struct sockaddr *)&local, sizeof local) != 0) {
        perror("udpecho");
        return 1;
    }
    for (;;) {
        char in[512], out[600];
        struct sockaddr_in peer;
        socklen_t len = sizeof peer;
        ssize_t got = recvfrom(fd, in, sizeof in - 1, 0, (struct sockaddr *)&peer, &len);
        if (got < 0)
            continue;
        in[got] = 0;
        int n = snprintf(out, sizeof out, "TINY-UDP-%d %s", port, in);
        sendto(fd, out, (size_t)n, 0, (struct sockaddr *)&peer, len);
    }
}
