/* Linked into every library the harness exports from a build with AMX kernels: when the library
 * is loaded, this asks Linux for AMX tile state for the process (arch_prctl(ARCH_REQ_XCOMP_PERM,
 * XFEATURE_XTILEDATA), as harness.targets.request_amx_permission does), so that the library runs
 * in any process that loads it, with the TVM runtime alone. Where the OS refuses, one line on
 * stderr says why: the first tile instruction would end the process (SIGILL). */
#if defined(__linux__) && defined(__x86_64__)
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HARNESS_ARCH_REQ_XCOMP_PERM 0x1023
#define HARNESS_XFEATURE_XTILEDATA 18

int harness_amx_tile_state_error = 0; /* the errno of a refusal, 0 once granted */

__attribute__((constructor)) static void harness_amx_request_tile_state(void) {
  if (syscall(SYS_arch_prctl, HARNESS_ARCH_REQ_XCOMP_PERM, HARNESS_XFEATURE_XTILEDATA) == 0) return;
  harness_amx_tile_state_error = errno;
  fprintf(stderr, "error: this library's AMX kernels cannot run here: the OS refused AMX tile state (%s); "
          "its first tile instruction would end the process (SIGILL). Rebuild with "
          "build.schedules.cpu_int8_amx: false for a CPU without AMX.\n", strerror(errno));
}

#ifdef __cplusplus
}
#endif
#endif
