/* The C floor: N back-to-back cuLaunchKernel calls with prebuilt parameters, timed in C.
 * Built with nvcc by jitlab/bench/floors.py and called through ctypes with a kernel Triton compiled
 * and loaded, and the parameter array the cuda-python floor uses too. (nvcc compiles it as C++, hence
 * extern "C" for ctypes.) Nothing but the driver call
 * is inside the loop: this is what a launch costs when no Python runs at all. */
#include <cuda.h>
#include <time.h>

extern "C" long long jitlab_floor_loop(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned block,
                            unsigned shared, CUstream stream, void **params, int n) {
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int i = 0; i < n; i++) {
    CUresult r = cuLaunchKernel(f, gx, gy, gz, block, 1, 1, shared, stream, params, 0);
    if (r != CUDA_SUCCESS) return -(long long)r;
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  return (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
}
