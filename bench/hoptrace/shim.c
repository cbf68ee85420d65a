/*
 * bench/hoptrace/shim.c: LD_PRELOAD for the postmaster of a hoptrace build:
 * the time of the last send() and recv() with data in the process, which
 * the traced publisher reads (she_hop_shim) around js_PublishMsg.
 *   gcc -O2 -shared -fPIC -o shim.so shim.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <sys/socket.h>
#include <time.h>
volatile unsigned long long she_shim_send_ns, she_shim_recv_ns;
static unsigned long long now(void){struct timespec ts; clock_gettime(CLOCK_MONOTONIC,&ts); return ts.tv_sec*1000000000ULL+ts.tv_nsec;}
static ssize_t (*rs)(int,const void*,size_t,int);
static ssize_t (*rr)(int,void*,size_t,int);
ssize_t send(int fd,const void*b,size_t n,int f){ if(!rs) rs=dlsym(RTLD_NEXT,"send"); ssize_t r=rs(fd,b,n,f); if(r>0) she_shim_send_ns=now(); return r;}
ssize_t recv(int fd,void*b,size_t n,int f){ if(!rr) rr=dlsym(RTLD_NEXT,"recv"); ssize_t r=rr(fd,b,n,f); if(r>0) she_shim_recv_ns=now(); return r;}
