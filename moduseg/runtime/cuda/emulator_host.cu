// Host emulator for smfa.cu and topk.cu: compile with g++ -x c++ (never NVRTC).
//
// Supplies the CUDA built-ins the kernels use, then includes the kernel
// sources unchanged and runs a launch grid on the CPU. Each CUDA thread of a
// block is a fiber (ucontext) with its own stack; __syncthreads() switches to
// the next fiber, and a block's phase ends when every live thread has reached
// the barrier or returned. Between barriers the threads run in a shuffled
// order (seeded per block and phase), so a missing barrier shows up as wrong
// numbers instead of passing by luck. Blocks also run in a shuffled order
// (the last-block ticket in smfa_pool relies on no particular order).
// __shared__ becomes `static`: one copy for all fibers of the running block.
// Single OS thread, so atomics are plain read-modify-writes.

#include <ucontext.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <vector>

struct ms_dim3 { unsigned int x, y, z; };
static ms_dim3 threadIdx, blockIdx, blockDim, gridDim;

#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
struct float4 { float x, y, z, w; };

typedef uint16_t ms_half;
static inline float ms_half2float(ms_half h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else {  // subnormal half -> normal float
            int e = -1;
            do { man <<= 1; ++e; } while (!(man & 0x400u));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 112u) << 23) | (man << 13);
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline long long min(long long a, long long b) { return a < b ? a : b; }
static inline long long max(long long a, long long b) { return a > b ? a : b; }
static inline float atomicAdd(float* p, float v) { float o = *p; *p = o + v; return o; }
static inline unsigned int atomicAdd(unsigned int* p, unsigned int v) { unsigned int o = *p; *p = o + v; return o; }
static inline void __threadfence() {}

// ---- fiber scheduler -------------------------------------------------------
namespace emu {

const size_t kStack = 128 * 1024;

struct Fiber {
    ucontext_t ctx;
    std::vector<char> stack;
    ms_dim3 tid;
    bool done;
};

static ucontext_t g_main;
static std::vector<Fiber> g_fibers;
static int g_current = -1;
static std::function<void()> g_body;
static long long g_barriers = 0;

static void trampoline() {
    g_body();
    g_fibers[g_current].done = true;
    swapcontext(&g_fibers[g_current].ctx, &g_main);
}

static void barrier() {
    ++g_barriers;
    swapcontext(&g_fibers[g_current].ctx, &g_main);
    threadIdx = g_fibers[g_current].tid;   // resumed: restore this thread's index
}

static void run_block(unsigned int nthreads, std::mt19937& rng) {
    if (g_fibers.size() < nthreads) g_fibers.resize(nthreads);
    for (unsigned int t = 0; t < nthreads; ++t) {
        Fiber& f = g_fibers[t];
        if (f.stack.size() != kStack) f.stack.assign(kStack, 0);
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = f.stack.data();
        f.ctx.uc_stack.ss_size = kStack;
        f.ctx.uc_link = &g_main;
        makecontext(&f.ctx, trampoline, 0);
        f.tid = ms_dim3{t % blockDim.x, (t / blockDim.x) % blockDim.y, t / (blockDim.x * blockDim.y)};
        f.done = false;
    }
    std::vector<unsigned int> order(nthreads);
    for (unsigned int t = 0; t < nthreads; ++t) order[t] = t;
    for (;;) {
        std::shuffle(order.begin(), order.end(), rng);
        bool any = false;
        for (unsigned int t : order) {
            if (g_fibers[t].done) continue;
            any = true;
            g_current = (int)t;
            threadIdx = g_fibers[t].tid;
            swapcontext(&g_main, &g_fibers[t].ctx);
        }
        if (!any) break;
    }
    g_current = -1;
}

static void launch(ms_dim3 grid, ms_dim3 block, unsigned int seed, std::function<void()> body) {
    gridDim = grid;
    blockDim = block;
    g_body = std::move(body);
    const unsigned int nblocks = grid.x * grid.y * grid.z;
    const unsigned int nthreads = block.x * block.y * block.z;
    std::mt19937 rng(seed);
    std::vector<unsigned int> blocks(nblocks);
    for (unsigned int b = 0; b < nblocks; ++b) blocks[b] = b;
    std::shuffle(blocks.begin(), blocks.end(), rng);
    for (unsigned int b : blocks) {
        blockIdx = ms_dim3{b % grid.x, (b / grid.x) % grid.y, b / (grid.x * grid.y)};
        run_block(nthreads, rng);
    }
}

}  // namespace emu

static inline void __syncthreads() { emu::barrier(); }

#include "smfa.cu"
#include "topk.cu"

// ---- entry points for ctypes: grid, block, seed, then the kernel's arguments --
#define EMU_DIMS unsigned int gx, unsigned int gy, unsigned int bx, unsigned int seed
#define EMU_LAUNCH(call) emu::launch(ms_dim3{gx, gy, 1}, ms_dim3{bx, 1, 1}, seed, [&] { call; })

extern "C" {

long long emu_barrier_count() { return emu::g_barriers; }

void emu_smfa_weights(EMU_DIMS, const unsigned char* masks, int P, int Hm, int Wm, int rh, int rw,
                      int gh, int gw, int patch, float* weights, float* wsum, unsigned int* area,
                      float* norm2, unsigned int* counters) {
    EMU_LAUNCH(smfa_weights(masks, P, Hm, Wm, rh, rw, gh, gw, patch, weights, wsum, area, norm2, counters));
}

void emu_smfa_pool_f32(EMU_DIMS, const float* weights, const float* wsum, const float* feat,
                       long long sd, long long sn, int P, int D, int N, float eps, float* out,
                       float* norm2, unsigned int* counters) {
    EMU_LAUNCH(smfa_pool_f32(weights, wsum, feat, sd, sn, P, D, N, eps, out, norm2, counters));
}

void emu_smfa_pool_f16(EMU_DIMS, const float* weights, const float* wsum, const ms_half* feat,
                       long long sd, long long sn, int P, int D, int N, float eps, float* out,
                       float* norm2, unsigned int* counters) {
    EMU_LAUNCH(smfa_pool_f16(weights, wsum, feat, sd, sn, P, D, N, eps, out, norm2, counters));
}

void emu_topk_partial_f32(EMU_DIMS, const float* queries, int Q, const float* bank, int Nb, int D,
                          int K, int rows_per_seg, float* part_s, int* part_i) {
    EMU_LAUNCH(topk_partial_f32(queries, Q, bank, Nb, D, K, rows_per_seg, part_s, part_i));
}

void emu_topk_partial_f16(EMU_DIMS, const float* queries, int Q, const ms_half* bank, int Nb, int D,
                          int K, int rows_per_seg, float* part_s, int* part_i) {
    EMU_LAUNCH(topk_partial_f16(queries, Q, bank, Nb, D, K, rows_per_seg, part_s, part_i));
}

void emu_topk_merge(EMU_DIMS, const float* part_s, const int* part_i, int Q, int nseg, int K,
                    float* out_s, int* out_i) {
    EMU_LAUNCH(topk_merge(part_s, part_i, Q, nseg, K, out_s, out_i));
}

}  // extern "C"
