// Oracle for engine/gguf/quant.ts: runs ggml's own (de)quantization from libggml-base.so (the library
// node-llama-cpp ships) on files of raw data, so the test can compare them with ours bit for bit.
//
// Only the few declarations needed are written here, checked against ggml/include/ggml.h of the
// llama.cpp release that node-llama-cpp 3.21.1 bundles:
//   const struct ggml_type_traits * ggml_get_type_traits(enum ggml_type type);
//   size_t ggml_quantize_chunk(enum ggml_type type, const float * src, void * dst, int64_t start,
//                              int64_t nrows, int64_t n_per_row, const float * imatrix);
// The `info` command prints the traits so the test can check this struct layout against the block
// sizes it knows (a wrong layout shows up as nonsense there, not as a silent mismatch).
//
// Usage:
//   ggml-dequant LIB info TYPE                              -> "name blck_size type_size has_to_float"
//   ggml-dequant LIB dequant TYPE N_ELEMENTS IN OUT          IN: encoded blocks, OUT: f32
//   ggml-dequant LIB quant TYPE N_ROWS N_PER_ROW IN OUT      IN: f32, OUT: encoded blocks

#include <dlfcn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*to_float_fn)(const void *src, float *dst, int64_t n);
typedef void (*from_float_fn)(const float *src, void *dst, int64_t n);

struct ggml_type_traits_decl {
    const char *type_name;
    int64_t blck_size;
    int64_t blck_size_interleave;
    size_t type_size;
    bool is_quantized;
    to_float_fn to_float;
    from_float_fn from_float_ref;
};

typedef const struct ggml_type_traits_decl *(*get_traits_fn)(int type);
typedef size_t (*quantize_chunk_fn)(int type, const float *src, void *dst, int64_t start, int64_t nrows,
                                    int64_t n_per_row, const float *imatrix);

static void die(const char *what, const char *detail) {
    fprintf(stderr, "ggml-dequant: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    exit(2);
}

static void *read_file(const char *path, size_t *size) {
    FILE *fp = fopen(path, "rb");
    if (!fp) die("cannot open input", path);
    if (fseek(fp, 0, SEEK_END) != 0) die("cannot seek input", path);
    long len = ftell(fp);
    if (len < 0) die("cannot size input", path);
    rewind(fp);
    void *buf = malloc(len > 0 ? (size_t)len : 1);
    if (!buf) die("out of memory", NULL);
    if (len > 0 && fread(buf, 1, (size_t)len, fp) != (size_t)len) die("short read", path);
    fclose(fp);
    *size = (size_t)len;
    return buf;
}

static void write_file(const char *path, const void *data, size_t size) {
    FILE *fp = fopen(path, "wb");
    if (!fp) die("cannot create output", path);
    if (size > 0 && fwrite(data, 1, size, fp) != size) die("short write", path);
    if (fclose(fp) != 0) die("cannot close output", path);
}

int main(int argc, char **argv) {
    if (argc < 4) die("usage: ggml-dequant LIB info|dequant|quant TYPE ...", NULL);
    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) die("cannot load ggml", dlerror());
    get_traits_fn get_traits = (get_traits_fn)dlsym(lib, "ggml_get_type_traits");
    quantize_chunk_fn quantize_chunk = (quantize_chunk_fn)dlsym(lib, "ggml_quantize_chunk");
    if (!get_traits || !quantize_chunk) die("symbol missing from ggml", dlerror());

    const char *cmd = argv[2];
    int type = atoi(argv[3]);
    const struct ggml_type_traits_decl *tr = get_traits(type);
    if (!tr) die("no traits for type", argv[3]);

    if (strcmp(cmd, "info") == 0) {
        printf("%s %lld %zu %d\n", tr->type_name ? tr->type_name : "?", (long long)tr->blck_size, tr->type_size,
               tr->to_float != NULL);
        return 0;
    }
    if (strcmp(cmd, "dequant") == 0 && argc == 7) {
        int64_t n = atoll(argv[4]);
        if (!tr->to_float) die("type has no to_float", tr->type_name);
        if (tr->blck_size <= 0 || n % tr->blck_size != 0) die("element count is not a whole number of blocks", argv[4]);
        size_t size;
        void *src = read_file(argv[5], &size);
        if (size != (size_t)(n / tr->blck_size) * tr->type_size) die("input size does not match the element count", argv[5]);
        float *dst = malloc((size_t)n * sizeof(float) + 1);
        if (!dst) die("out of memory", NULL);
        tr->to_float(src, dst, n);
        write_file(argv[6], dst, (size_t)n * sizeof(float));
        return 0;
    }
    if (strcmp(cmd, "quant") == 0 && argc == 8) {
        int64_t nrows = atoll(argv[4]);
        int64_t per_row = atoll(argv[5]);
        if (tr->blck_size <= 0 || per_row % tr->blck_size != 0) die("row length is not a whole number of blocks", argv[5]);
        size_t size;
        float *src = read_file(argv[6], &size);
        if (size != (size_t)(nrows * per_row) * sizeof(float)) die("input size does not match rows x row length", argv[6]);
        size_t out_size = (size_t)(nrows * per_row / tr->blck_size) * tr->type_size;
        void *dst = malloc(out_size + 1);
        if (!dst) die("out of memory", NULL);
        size_t wrote = quantize_chunk(type, src, dst, 0, nrows, per_row, NULL);
        if (wrote != out_size) die("ggml_quantize_chunk wrote an unexpected size", NULL);
        write_file(argv[7], dst, out_size);
        return 0;
    }
    die("unknown command or wrong argument count", cmd);
    return 2;
}
