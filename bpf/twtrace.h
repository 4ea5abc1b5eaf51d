/* The one definition of what the kernel side shares with user space.
 *
 * twtrace's loader hands these structs to bcc, which derives the Python
 * (ctypes) view of every map and event from them, so user space never
 * restates a layout.  Included by twtrace.bpf.c.
 */
#ifndef TWTRACE_H
#define TWTRACE_H

#define TW_COMM_LEN 16

/* Event kinds (struct tw_event.kind). */
#define TW_EV_ADD 1
#define TW_EV_CALLBACK 2
#define TW_EV_CANCEL 3
#define TW_EV_RUN 4

/* Histogram kinds (struct tw_hkey.kind). */
#define TW_H_QUEUE 0
#define TW_H_RUN 1

/* Slots of the global counter array. */
#define TW_ST_LOST 0      /* events the ring/perf buffer had no room for */
#define TW_ST_EVICTED 1   /* items/stats not tracked: a bounded map was full */
#define TW_ST_UNMATCHED 2 /* callbacks whose add was not seen */
#define TW_ST_NESTED 3    /* probed callbacks called directly inside a callback (not items) */
#define TW_ST_UNTIMED 4   /* callbacks that ran unprobed, settled when their item was re-queued */
#define TW_ST_RESYNC 5    /* task_work_run levels reset after missed returns */
#define TW_ST_RECOVERED 6 /* adds whose entry or return program the kernel skipped, rebuilt */
#define TW_ST_N 7

/* Flags of a callback event. */
#define TW_CB_MATCHED 1 /* the add was seen: queue_ns is valid */
#define TW_CB_UNTIMED 2 /* ran unprobed: ts is the batch's start, no run time */

/* One happening, sent to user space only when events are asked for. */
struct tw_event {
	u64 ts;       /* add: entry; callback: start; cancel: return; run: start */
	u64 work;     /* the callback_head pointer value */
	u64 func;     /* callback function address */
	u64 queue_ns; /* callback */
	u64 dur_ns;   /* callback: run time; run: duration of task_work_run */
	u32 kind;
	u32 tid; /* target task (add, cancel) or the running task */
	u32 pid;
	u32 adder_tid;
	u32 adder_pid;
	s32 ret;     /* add: task_work_add's return value */
	u32 notify;  /* add: raw notify argument */
	u32 count;   /* run: callbacks run */
	u32 flags;
	s32 stack_id; /* add, with TW_STACKS: the adder's kernel stack; <0: none */
	char comm[TW_COMM_LEN];       /* target / running task */
	char adder_comm[TW_COMM_LEN]; /* add */
};

/* Aggregates are kept per (target task, callback function). */
struct tw_key {
	u32 tid;
	u32 pad;
	u64 func;
};

struct tw_agg {
	u64 adds; /* task_work_add calls, failed ones included */
	u64 failed_adds;
	u64 cancels;
	u64 callbacks;
	u64 matched; /* callbacks whose add was seen (they have a queue latency) */
	u64 queue_sum;
	u64 queue_max;
	u64 run_sum;
	u64 run_max;
	u64 notify_mask; /* bit n: notify mode n seen */
};

struct tw_hkey {
	u32 tid;
	u32 kind;
	u64 func;
	u32 bucket;
	u32 pad;
};

/* Per task: identity and queue depth (which is per task, not per callback). */
struct tw_task {
	u32 pid;
	u32 pad;
	char comm[TW_COMM_LEN];
	s64 depth;
	s64 max_depth;
	u64 runs; /* task_work_run calls that ran a traced callback */
	u64 last_run_ts;  /* entry of the latest task_work_run */
	u64 last_run_end; /* return of the latest outermost task_work_run */
};

/* Who queues work on whom. */
/* With TW_STACKS: adds per (callback function, adder's kernel stack). */
struct tw_skey {
	u64 func;
	s64 stack_id;
};

struct tw_pair {
	u32 adder_pid;
	u32 tid;
	u64 func;
};

struct tw_pair_val {
	u64 adds;
	char adder_comm[TW_COMM_LEN];
};

/* An item in flight, keyed by its callback_head pointer value. */
struct tw_item {
	u64 ts;
	u64 func;
	u32 tid;
	u32 pid;
	u32 adder_tid;
	u32 adder_pid;
};

#endif
