/* The HIP C floor: N back-to-back hipModuleLaunchKernel calls with prebuilt parameters, timed in C
 * (jitlab/bench/floor.c for HIP). Built by floors_hip.py with the host C compiler against the HIP
 * headers Triton ships (no hipcc, no link step): the caller passes the launch entry point it took from
 * the libamdhip64.so that Triton's HIP driver uses. Nothing but the runtime call is inside the loop. */
#define __HIP_PLATFORM_AMD__
#include <hip/hip_runtime_api.h>
#include <time.h>

typedef hipError_t (*launch_fn)(hipFunction_t, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                                hipStream_t, void **, void **);

long long jitlab_hip_floor_loop(launch_fn launch, hipFunction_t f, unsigned gx, unsigned gy, unsigned gz,
                                unsigned block, unsigned shared, hipStream_t stream, void **params, int n) {
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int i = 0; i < n; i++) {
    hipError_t r = launch(f, gx, gy, gz, block, 1, 1, shared, stream, params, 0);
    if (r != hipSuccess) return -(long long)r;
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  return (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
}
