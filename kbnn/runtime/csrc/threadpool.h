/* A small fork-join thread pool owned by one delegate (no global state).
 *
 *   kbnn_pool *pool = kbnn_pool_create(2);
 *   kbnn_pool_run(pool, work, arg, 100);  // work(arg, begin, end) over [0, 100) in 2 parts
 *   kbnn_pool_destroy(pool);
 */
#ifndef KBNN_THREADPOOL_H_
#define KBNN_THREADPOOL_H_

typedef struct kbnn_pool kbnn_pool;
typedef void (*kbnn_task)(void *arg, int begin, int end);

/* NULL when threads cannot be started; kbnn_pool_run on NULL runs on the caller. */
kbnn_pool *kbnn_pool_create(int num_threads);
void kbnn_pool_destroy(kbnn_pool *pool);
int kbnn_pool_threads(const kbnn_pool *pool);
/* Runs task over [0, count), split in contiguous parts of at least min_part items. */
void kbnn_pool_run(kbnn_pool *pool, kbnn_task task, void *arg, int count, int min_part);

#endif /* KBNN_THREADPOOL_H_ */
