/* The AMX int8 tile instructions the harness's kernels use, in portable C: a build made with
 * harness.schedules.amx.emulated() calls these where an AMX build has the instructions, so that
 * the kernels' tile plans, layouts and epilogues run (slowly) on any x86 CPU and their integer
 * sums can be checked against numpy.
 *
 * Semantics after the Intel SDM (TILECFG palette 1: eight tiles of up to 16 rows x 64 bytes):
 * the tile state is per thread, ldtilecfg zeroes every tile, sttilecfg of an unconfigured state
 * writes zeros, loads zero the rows past a tile's configured shape, and the dot products are
 * 4-byte groups summed into int32 with wrap-around. Where the hardware would fault (#UD / #GP: a
 * tile used before configuration, shapes that do not agree, rows or bytes past the limits), the
 * emulator counts an error, keeps the first message and skips the instruction:
 * harness_amx_emulator_errors() / harness_amx_emulator_message() read them back, and
 * harness_amx_emulator_products() how many tile dot products ran. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#ifdef __cplusplus  /* TVM's compiler may be a C++ one: the kernels call these by their C names */
extern "C" {
#endif

#define TILES 8
#define MAX_ROWS 16
#define ROW_BYTES 64

typedef struct {
  int configured;
  uint8_t cfg[64];
  uint8_t data[TILES][MAX_ROWS][ROW_BYTES];
} tile_state;

static __thread tile_state state;
static int errors;
static long products;  /* tile dot products executed, all threads */
static char message[256];

static void fault(const char* what, int tile) {
  if (__atomic_fetch_add(&errors, 1, __ATOMIC_SEQ_CST) == 0)
    snprintf(message, sizeof(message), "%s (tile %d)", what, tile);
}

int harness_amx_emulator_errors(void) { return __atomic_load_n(&errors, __ATOMIC_SEQ_CST); }
long harness_amx_emulator_products(void) { return __atomic_load_n(&products, __ATOMIC_SEQ_CST); }
const char* harness_amx_emulator_message(void) { return message; }
void harness_amx_emulator_reset(void) {
  __atomic_store_n(&errors, 0, __ATOMIC_SEQ_CST);
  __atomic_store_n(&products, 0, __ATOMIC_SEQ_CST);
  message[0] = 0;
}

static int rows_of(int t) { return state.cfg[48 + t]; }
static int colsb_of(int t) { return state.cfg[16 + 2 * t] | (state.cfg[17 + 2 * t] << 8); }

/* A tile that may be used: configured, in range, with a non-empty shape. */
static int usable(int t, const char* op) {
  if (t < 0 || t >= TILES) { fault(op, t); return 0; }
  if (!state.configured) { fault("tile instruction before ldtilecfg", t); return 0; }
  if (rows_of(t) == 0 || colsb_of(t) == 0) { fault("tile with no configured shape", t); return 0; }
  return 1;
}

void harness_amx_ldtilecfg(const void* p) {
  const uint8_t* cfg = (const uint8_t*)p;
  memset(state.data, 0, sizeof(state.data));
  if (cfg[0] == 0) {  /* palette 0: back to the initial (unconfigured) state */
    memset(state.cfg, 0, sizeof(state.cfg));
    state.configured = 0;
    return;
  }
  int ok = cfg[0] == 1 && cfg[1] == 0;
  for (int i = 2; i < 16; ++i) ok = ok && cfg[i] == 0;
  for (int t = 0; t < 16; ++t) {
    int colsb = cfg[16 + 2 * t] | (cfg[17 + 2 * t] << 8), rows = cfg[48 + t];
    if (t >= TILES) ok = ok && colsb == 0 && rows == 0;
    else ok = ok && colsb <= ROW_BYTES && rows <= MAX_ROWS && (colsb == 0) == (rows == 0);
  }
  if (!ok) { fault("ldtilecfg of an invalid palette-1 configuration", -1); return; }
  memcpy(state.cfg, cfg, sizeof(state.cfg));
  state.configured = 1;
}

void harness_amx_sttilecfg(void* p) {
  if (state.configured) memcpy(p, state.cfg, sizeof(state.cfg));
  else memset(p, 0, sizeof(state.cfg));
}

void harness_amx_tilezero(int32_t t) {
  if (usable(t, "tilezero of no tile")) memset(state.data[t], 0, sizeof(state.data[t]));
}

void harness_amx_tileloadd64(int32_t t, const void* base, int64_t stride) {
  if (!usable(t, "tileloadd of no tile")) return;
  int rows = rows_of(t), colsb = colsb_of(t);
  memset(state.data[t], 0, sizeof(state.data[t]));
  for (int r = 0; r < rows; ++r) memcpy(state.data[t][r], (const uint8_t*)base + r * stride, colsb);
}

void harness_amx_tilestored64(int32_t t, void* base, int64_t stride) {
  if (!usable(t, "tilestored of no tile")) return;
  int rows = rows_of(t), colsb = colsb_of(t);
  for (int r = 0; r < rows; ++r) memcpy((uint8_t*)base + r * stride, state.data[t][r], colsb);
}

/* dst[m][n] += sum over k, i<4 of a[m][4k+i] * b[k][4n+i]; a_signed / b_signed pick the form. */
static void dot(int c, int a, int b, int a_signed, int b_signed, const char* op) {
  if (!usable(c, op) || !usable(a, op) || !usable(b, op)) return;
  if (c == a || c == b || a == b) { fault("tile dot product with a tile used twice", c); return; }
  int m_rows = rows_of(c), n_cols = colsb_of(c) / 4, k_groups = colsb_of(a) / 4;
  if (rows_of(a) != m_rows || colsb_of(b) != colsb_of(c) || rows_of(b) != k_groups
      || colsb_of(a) % 4 || colsb_of(c) % 4) {
    fault("tile dot product of tiles whose shapes do not agree", c);
    return;
  }
  __atomic_fetch_add(&products, 1, __ATOMIC_RELAXED);
  for (int m = 0; m < m_rows; ++m) {
    int32_t* acc = (int32_t*)state.data[c][m];
    for (int k = 0; k < k_groups; ++k) {
      const uint8_t* x = state.data[a][m] + 4 * k;
      for (int n = 0; n < n_cols; ++n) {
        const uint8_t* y = state.data[b][k] + 4 * n;
        int32_t sum = 0;
        for (int i = 0; i < 4; ++i) {
          int32_t u = a_signed ? (int8_t)x[i] : x[i];
          int32_t v = b_signed ? (int8_t)y[i] : y[i];
          sum += u * v;
        }
        acc[n] = (int32_t)((uint32_t)acc[n] + (uint32_t)sum);
      }
    }
  }
}

void harness_amx_tdpbusd(int32_t c, int32_t a, int32_t b) { dot(c, a, b, 0, 1, "tdpbusd"); }
void harness_amx_tdpbsud(int32_t c, int32_t a, int32_t b) { dot(c, a, b, 1, 0, "tdpbsud"); }

#ifdef __cplusplus
}
#endif
