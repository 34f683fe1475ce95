/*
 * Streaming a checkpoint into "device memory" through a small reusable double buffer, with the
 * copy of one tensor overlapped with the upload of the previous one (docs/streaming.md).
 *
 *   staging CHECKPOINT...
 *
 * The pattern, for a real device: the two slots are pinned host memory (cudaHostAlloc,
 * hipHostMalloc), the upload is an asynchronous copy on a stream and "upload done" is its
 * event; here the device is a malloc'd arena and the upload a memcpy on a second thread that
 * also sleeps a little, as a transfer takes time.
 *
 *  1. Open the checkpoint and mirror it (mmckpt_module_from_checkpoint): one entry per tensor.
 *  2. The load copies entries in file order: ascending file_offset of the checkpoint's tensors
 *     (mmckpt_checkpoint_tensor_at; MMCKPT_NO_OFFSET last), then table order. Bind the entries, in that order, alternately to slot 0 and slot 1
 *     (mmckpt_module_bind; each slot holds the largest entry). Binding several entries to one
 *     slot is fine: only one is written at a time, and the callback says when.
 *  3. Load without MMCKPT_LOAD_STRICT (a strict load with a callback saves each destination
 *     before overwriting it, so that a stop can restore it: an extra copy that a staging
 *     buffer does not need; a mirror's keys match by construction, and the report says if not).
 *  4. In the callback of entry k (its bytes are now in slot k % 2): queue the upload of slot
 *     k % 2, then wait until slot (k + 1) % 2 is free (the upload of entry k - 1 is done) and
 *     return. mmckpt then copies entry k + 1 into that slot while entry k is uploaded.
 *  5. After the load, wait for the last upload.
 *
 * The checks: every callback finds its entry in the slot the plan says (the copy order is the
 * one documented), the device copy equals a plain copy load (materialize + load), and with two
 * entries or more at least one upload overlapped the next copy. Exit status 0 when all hold.
 */
#define _POSIX_C_SOURCE 200809L
#include <mmckpt.h>

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SLOTS 2
#define UPLOAD_MICROSECONDS 2000 /* the simulated transfer's latency, per tensor */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The uploader: a queue of at most SLOTS jobs, one per slot. */
struct stager {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    unsigned char *slot[SLOTS];
    int busy[SLOTS];             /* queued or being uploaded */
    unsigned char *job_dst[SLOTS];
    size_t job_len[SLOTS];
    size_t job_seq[SLOTS];       /* the load-order position of the entry in the slot */
    size_t next_job;             /* the next position to upload, in order */
    int quit;
    double *upload_end;          /* per position: when its upload finished */
    /* The plan and what the callback saw. */
    size_t count;
    size_t *order;               /* position -> entry index */
    size_t *device_offset;       /* entry index -> offset in the device arena */
    unsigned char *device;
    size_t seen;                 /* callbacks so far */
    double *callback_return;     /* per position: when the callback returned */
    int wrong_slot;
};

static void *uploader(void *arg) {
    struct stager *s = arg;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        int slot = (int)(s->next_job % SLOTS);
        while (!s->quit && !(s->busy[slot] && s->job_seq[slot] == s->next_job))
            pthread_cond_wait(&s->changed, &s->lock);
        if (s->quit && !(s->busy[slot] && s->job_seq[slot] == s->next_job))
            break;
        pthread_mutex_unlock(&s->lock);
        /* The transfer: slot -> device (cudaMemcpyAsync from pinned memory on a real one). */
        struct timespec latency = {0, UPLOAD_MICROSECONDS * 1000L};
        nanosleep(&latency, NULL);
        memcpy(s->job_dst[slot], s->slot[slot], s->job_len[slot]);
        pthread_mutex_lock(&s->lock);
        s->upload_end[s->next_job] = now();
        s->busy[slot] = 0;
        s->next_job++;
        pthread_cond_broadcast(&s->changed);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* Step 4: called after entry `seen` (in load order) was copied into its slot. */
static int32_t on_tensor(void *user_data, const mmckpt_tensor *entry) {
    struct stager *s = user_data;
    size_t k = s->seen++;
    int slot = (int)(k % SLOTS);
    if (entry->data != s->slot[slot]) {
        s->wrong_slot = 1;
        return 1; /* stop: the copy order is not the documented one */
    }
    pthread_mutex_lock(&s->lock);
    s->job_dst[slot] = s->device + s->device_offset[s->order[k]];
    s->job_len[slot] = (size_t)entry->nbytes;
    s->job_seq[slot] = k;
    s->busy[slot] = 1;
    pthread_cond_broadcast(&s->changed);
    int other = (slot + 1) % SLOTS;
    while (s->busy[other])
        pthread_cond_wait(&s->changed, &s->lock);
    pthread_mutex_unlock(&s->lock);
    s->callback_return[k] = now();
    return 0;
}

struct ranked {
    uint64_t offset;
    size_t index;
};

static int by_file_order(const void *a, const void *b) {
    const struct ranked *x = a, *y = b;
    if (x->offset != y->offset)
        return x->offset < y->offset ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

#define CHECK(call)                                                                         \
    do {                                                                                    \
        mmckpt_status st_ = (call);                                                         \
        if (st_ != MMCKPT_OK) {                                                             \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, mmckpt_last_error()); \
            return 1;                                                                       \
        }                                                                                   \
    } while (0)

static int stream(const char *path) {
    mmckpt_checkpoint *ckpt = NULL;
    CHECK(mmckpt_checkpoint_open(path, NULL, &ckpt));
    mmckpt_module *mirror = NULL, *reference = NULL;
    CHECK(mmckpt_module_from_checkpoint(ckpt, &mirror));
    CHECK(mmckpt_module_from_checkpoint(ckpt, &reference));
    size_t count = mmckpt_module_count(mirror);

    /* Step 2: the load order, the slot size, the device layout. */
    struct ranked *rank = calloc(count ? count : 1, sizeof *rank);
    struct stager s;
    memset(&s, 0, sizeof s);
    s.count = count;
    s.order = calloc(count ? count : 1, sizeof *s.order);
    s.device_offset = calloc(count ? count : 1, sizeof *s.device_offset);
    s.upload_end = calloc(count ? count : 1, sizeof *s.upload_end);
    s.callback_return = calloc(count ? count : 1, sizeof *s.callback_return);
    size_t slot_bytes = 64, device_bytes = 0;
    for (size_t i = 0; i < count; i++) {
        mmckpt_tensor source, entry;
        CHECK(mmckpt_checkpoint_tensor_at(ckpt, i, &source));
        CHECK(mmckpt_module_at(mirror, i, &entry));
        rank[i].offset = source.file_offset; /* MMCKPT_NO_OFFSET (the largest) sorts last */
        rank[i].index = i;
        /* A meta entry has no data yet: its size is numel x itemsize. */
        size_t nbytes = (size_t)entry.numel * mmckpt_dtype_itemsize(entry.dtype);
        if (nbytes > slot_bytes)
            slot_bytes = nbytes;
        s.device_offset[i] = device_bytes;
        device_bytes += (nbytes + 63) / 64 * 64;
    }
    qsort(rank, count, sizeof *rank, by_file_order);
    for (size_t k = 0; k < count; k++)
        s.order[k] = rank[k].index;
    slot_bytes = (slot_bytes + 63) / 64 * 64;
    s.device = malloc(device_bytes ? device_bytes : 1);
    for (int i = 0; i < SLOTS; i++)
        if (posix_memalign((void **)&s.slot[i], 64, slot_bytes) != 0)
            return 1;
    for (size_t k = 0; k < count; k++) {
        mmckpt_tensor entry;
        CHECK(mmckpt_module_at(mirror, s.order[k], &entry));
        CHECK(mmckpt_module_bind(mirror, entry.name, s.slot[k % SLOTS], slot_bytes));
    }

    /* Steps 3-5. */
    pthread_mutex_init(&s.lock, NULL);
    pthread_cond_init(&s.changed, NULL);
    pthread_t thread;
    pthread_create(&thread, NULL, uploader, &s);
    mmckpt_load_options opts;
    CHECK(mmckpt_load_options_init(&opts, MMCKPT_LOAD_OPTIONS_VERSION));
    opts.flags = 0; /* a copy load, not strict */
    opts.on_tensor = on_tensor;
    opts.user_data = &s;
    mmckpt_load_report *report = NULL;
    mmckpt_status loaded = mmckpt_module_load(mirror, ckpt, &opts, &report);
    pthread_mutex_lock(&s.lock);
    while (loaded == MMCKPT_OK && s.next_job < count)
        pthread_cond_wait(&s.changed, &s.lock);
    s.quit = 1;
    pthread_cond_broadcast(&s.changed);
    pthread_mutex_unlock(&s.lock);
    pthread_join(thread, NULL);
    if (loaded != MMCKPT_OK) {
        fprintf(stderr, "%s: load: %s%s\n", path, mmckpt_last_error(),
                s.wrong_slot ? " (an entry was not in the slot planned for it)" : "");
        return 1;
    }
    int failed = 0;
    if (mmckpt_load_report_missing_count(report) || mmckpt_load_report_unexpected_count(report)) {
        fprintf(stderr, "%s: the mirror's keys did not match\n", path);
        failed = 1;
    }
    mmckpt_load_report_free(report);

    /* The device copy against a plain copy load. */
    CHECK(mmckpt_module_materialize(reference));
    CHECK(mmckpt_module_load(reference, ckpt, NULL, NULL));
    size_t overlapped = 0;
    for (size_t i = 0; i < count; i++) {
        mmckpt_tensor want;
        CHECK(mmckpt_module_at(reference, i, &want));
        if (want.nbytes && memcmp(s.device + s.device_offset[i], want.data, (size_t)want.nbytes)) {
            fprintf(stderr, "%s: '%s' differs on the device\n", path, want.name);
            failed = 1;
        }
    }
    /* Upload k overlapped copy k + 1 when it ended after callback k returned (the copy of
     * k + 1 starts then). */
    for (size_t k = 0; k + 1 < count; k++)
        overlapped += s.upload_end[k] > s.callback_return[k];
    if (count >= 2 && overlapped == 0) {
        fprintf(stderr, "%s: no upload overlapped a copy\n", path);
        failed = 1;
    }
    printf("%s: %zu tensors through 2 slots of %zu bytes; %zu of %zu uploads overlapped the next "
           "copy\n",
           path, count, slot_bytes, overlapped, count ? count - 1 : 0);

    mmckpt_module_free(mirror); /* before the slots it is bound to */
    mmckpt_module_free(reference);
    mmckpt_checkpoint_close(ckpt);
    for (int i = 0; i < SLOTS; i++)
        free(s.slot[i]);
    free(s.device);
    free(rank);
    free(s.order);
    free(s.device_offset);
    free(s.upload_end);
    free(s.callback_return);
    pthread_cond_destroy(&s.changed);
    pthread_mutex_destroy(&s.lock);
    return failed;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: staging CHECKPOINT...\n");
        return 2;
    }
    int failed = 0;
    for (int i = 1; i < argc; i++)
        failed |= stream(argv[i]);
    return failed;
}
