/* Fork-join pool: workers spin briefly on a generation counter (layers take microseconds,
 * a futex wake-up costs as much), then sleep on a condition variable. */
#include "threadpool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#define KBNN_SPIN_ROUNDS 20000

struct kbnn_pool {
  int num_threads; /* including the caller */
  pthread_t *threads;
  pthread_mutex_t mutex;
  pthread_cond_t wake;
  atomic_int generation;
  atomic_int remaining;
  atomic_int stop;
  kbnn_task task;
  void *arg;
  int count, parts;
};

typedef struct {
  kbnn_pool *pool;
  int index;
} worker_arg;

static void run_part(kbnn_pool *pool, int part) {
  if (part >= pool->parts) return;
  long begin = (long)pool->count * part / pool->parts;
  long end = (long)pool->count * (part + 1) / pool->parts;
  if (end > begin) pool->task(pool->arg, (int)begin, (int)end);
}

static void *worker_main(void *p) {
  worker_arg *wa = (worker_arg *)p;
  kbnn_pool *pool = wa->pool;
  int index = wa->index, seen = 0;
  free(wa);
  for (;;) {
    int spins = 0;
    while (atomic_load_explicit(&pool->generation, memory_order_acquire) == seen &&
           !atomic_load(&pool->stop) && spins < KBNN_SPIN_ROUNDS)
      ++spins;
    if (atomic_load_explicit(&pool->generation, memory_order_acquire) == seen &&
        !atomic_load(&pool->stop)) {
      pthread_mutex_lock(&pool->mutex);
      while (atomic_load(&pool->generation) == seen && !atomic_load(&pool->stop))
        pthread_cond_wait(&pool->wake, &pool->mutex);
      pthread_mutex_unlock(&pool->mutex);
    }
    if (atomic_load(&pool->stop)) return NULL;
    seen = atomic_load_explicit(&pool->generation, memory_order_acquire);
    run_part(pool, index);
    atomic_fetch_sub_explicit(&pool->remaining, 1, memory_order_acq_rel);
  }
}

kbnn_pool *kbnn_pool_create(int num_threads) {
  if (num_threads < 2) return NULL;
  kbnn_pool *pool = (kbnn_pool *)calloc(1, sizeof(kbnn_pool));
  if (!pool) return NULL;
  pool->threads = (pthread_t *)calloc((size_t)num_threads, sizeof(pthread_t));
  if (!pool->threads) {
    free(pool);
    return NULL;
  }
  pthread_mutex_init(&pool->mutex, NULL);
  pthread_cond_init(&pool->wake, NULL);
  pool->num_threads = 1;
  for (int i = 1; i < num_threads; ++i) {
    worker_arg *wa = (worker_arg *)malloc(sizeof(worker_arg));
    if (!wa) break;
    wa->pool = pool;
    wa->index = i;
    if (pthread_create(&pool->threads[i], NULL, worker_main, wa) != 0) {
      free(wa);
      break;
    }
    pool->num_threads = i + 1;
  }
  return pool;
}

void kbnn_pool_destroy(kbnn_pool *pool) {
  if (!pool) return;
  pthread_mutex_lock(&pool->mutex);
  atomic_store(&pool->stop, 1);
  pthread_cond_broadcast(&pool->wake);
  pthread_mutex_unlock(&pool->mutex);
  for (int i = 1; i < pool->num_threads; ++i) pthread_join(pool->threads[i], NULL);
  pthread_cond_destroy(&pool->wake);
  pthread_mutex_destroy(&pool->mutex);
  free(pool->threads);
  free(pool);
}

int kbnn_pool_threads(const kbnn_pool *pool) { return pool ? pool->num_threads : 1; }

void kbnn_pool_run(kbnn_pool *pool, kbnn_task task, void *arg, int count, int min_part) {
  int parts = pool ? pool->num_threads : 1;
  if (min_part < 1) min_part = 1;
  if (parts > count / min_part) parts = count / min_part;
  if (parts <= 1) {
    if (count > 0) task(arg, 0, count);
    return;
  }
  pool->task = task;
  pool->arg = arg;
  pool->count = count;
  pool->parts = parts;
  atomic_store(&pool->remaining, pool->num_threads - 1);
  pthread_mutex_lock(&pool->mutex);
  atomic_fetch_add_explicit(&pool->generation, 1, memory_order_release);
  pthread_cond_broadcast(&pool->wake);
  pthread_mutex_unlock(&pool->mutex);
  run_part(pool, 0);
  while (atomic_load_explicit(&pool->remaining, memory_order_acquire) > 0) {
  }
}
