/* A bare TCP ping-pong on loopback, both ends spinning on non-blocking recv,
 * pinned to CPUs 0 and 1: a 72-byte request (an NVMe/TCP capsule) and a
 * reply of the given size, with a spin-wait gap before each request. It
 * measures what the machine alone gives an isolated request, to read
 * open-loop latencies against.
 * Build: cc -O2 -o /tmp/pp perf/scripts/tcp-pingpong.c
 * Run:   /tmp/pp GAP_US COUNT REPLY_BYTES   (port 4599 on 127.0.0.1) */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sched.h>
#include <time.h>
#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e6+t.tv_nsec*1e-3;}
static void pin(int c){cpu_set_t s;CPU_ZERO(&s);CPU_SET(c,&s);sched_setaffinity(0,sizeof s,&s);}
static void spinrecv(int fd,char*b,int n){int got=0;while(got<n){int r=recv(fd,b+got,n-got,MSG_DONTWAIT);if(r>0)got+=r;}}
int cmp(const void*a,const void*b){double x=*(double*)a,y=*(double*)b;return x<y?-1:x>y;}
int main(int argc,char**argv){
  int gap_us=atoi(argv[1]), n=atoi(argv[2]), rsz=atoi(argv[3]);
  int ls=socket(AF_INET,SOCK_STREAM,0); int one=1; setsockopt(ls,SOL_SOCKET,SO_REUSEADDR,&one,4);
  struct sockaddr_in a={.sin_family=AF_INET,.sin_port=htons(4599)}; a.sin_addr.s_addr=htonl(0x7f000001);
  bind(ls,(void*)&a,sizeof a); listen(ls,1);
  if(fork()==0){ pin(0); int c=accept(ls,0,0); setsockopt(c,IPPROTO_TCP,TCP_NODELAY,&one,4); char b[72]; char*r=calloc(1,rsz);
    for(int i=0;i<n;i++){spinrecv(c,b,72); send(c,r,rsz,0);} exit(0);}
  pin(1); int s=socket(AF_INET,SOCK_STREAM,0); connect(s,(void*)&a,sizeof a); setsockopt(s,IPPROTO_TCP,TCP_NODELAY,&one,4);
  char b[72]={0}; char*r=malloc(rsz); double*lat=malloc(n*sizeof(double));
  for(int i=0;i<n;i++){ double t0=now(); while(now()<t0+gap_us); double t=now(); send(s,b,72,0); spinrecv(s,r,rsz); lat[i]=now()-t; }
  qsort(lat,n,sizeof(double),cmp); printf("gap %d us: p50 %.1f us p99 %.1f us\n",gap_us,lat[n/2],lat[n*99/100]);
}
