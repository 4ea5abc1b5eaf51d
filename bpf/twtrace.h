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
#define TW_ST_LOST 0       /* events the ring/perf buffer had no room for */
#define TW_ST_UNMATCHED 1  /* callbacks whose add was not seen */
#define TW_ST_SELF 2       /* adds to twtrace's own threads (its closes): not traced */
#define TW_ST_UNTIMED 3    /* callbacks that ran unprobed, settled in the kernel */
#define TW_ST_RESYNC 4     /* task_work_run levels reset after missed returns */
#define TW_ST_SPARE5 5     /* unused */
#define TW_ST_NORET 6      /* callbacks whose return was not seen (no run time) */
#define TW_ST_STACK_COLL 7 /* adder stacks not kept: hash collision in the stack map */
#define TW_ST_STACK_ERR 8  /* adder stacks not taken (other errors) */
/* Entries that did not fit, one slot per bounded map. */
#define TW_ST_FULL_INFLIGHT 9
#define TW_ST_FULL_TASKS 10
#define TW_ST_FULL_AGGS 11
#define TW_ST_FULL_HISTS 12
#define TW_ST_FULL_PAIRS 13
#define TW_ST_FULL_STACKS 14
#define TW_ST_FULL_RETIRED 15
#define TW_ST_FULL_FILTER 16
#define TW_ST_FULL_CGROUPS 17 /* new cgroups under a filtered one that did not fit */
#define TW_ST_N 18

/* Flags of a callback event. */
#define TW_CB_MATCHED 1 /* the add was seen */
#define TW_CB_UNTIMED 2 /* ran unprobed: queue_ns..dur_ns bound the queue latency, no run time */
#define TW_CB_NORUN 4   /* its return was not seen: no run time */

/* The window on bpf_ktime_get_ns() (all zero: closed), set by user space
 * once every probe is attached, and the generation of the drained maps
 * that programs write to. */
struct tw_ctl {
	u64 start_ns; /* counting starts at this instant ... */
	u64 end_ns;   /* ... and stops at this one (U64_MAX while open) */
	u32 gen;      /* 0 or 1: which set of drained maps is current */
	u32 probed_ver; /* raised whenever a callback function gets a probe */
};

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
	u32 gen; /* the target's incarnation */
	u32 adder_tid;
	u32 adder_pid;
	s32 ret;     /* add: predicted return value (0, or -ESRCH: target exited) */
	u32 notify;  /* add: raw notify argument */
	u32 count;   /* run: callbacks run */
	u32 flags;
	s32 stack_id; /* add, with TW_STACKS: the adder's kernel stack; <0: none */
	u32 pad;
	u64 cgroup;       /* add: the target's cgroup v2 id */
	u64 adder_cgroup; /* add: the adder's cgroup v2 id */
	char comm[TW_COMM_LEN];       /* target / running task */
	char adder_comm[TW_COMM_LEN]; /* add */
};

/* Aggregates are kept per (task incarnation, callback function), in maps
 * that user space drains every interval. */
struct tw_key {
	u32 tid;
	u32 gen;
	u64 func;
};

struct tw_agg {
	u64 adds; /* task_work_add calls, failed ones included */
	u64 failed_adds;
	u64 cancels;
	u64 cancels_matched; /* cancels of items whose add was seen */
	u64 callbacks;
	u64 matched; /* callbacks whose add was seen */
	u64 timed;   /* callbacks with an exact queue latency */
	u64 queue_sum;
	u64 queue_max;
	u64 run_sum;
	u64 run_max;
	u64 run_cnt;     /* callbacks with a run time */
	u64 notify_mask; /* bit n: notify mode n seen */
	u64 max_depth;   /* the task's queue depth right after the deepest add */
	u64 runs;        /* task_work_run calls that started a callback of this function first */
	u64 own_adds;    /* adds by the task to itself: its (adder, target) pair, kept here */
	u64 cgroup;      /* the task's cgroup v2 id at its latest add (else at entry creation) */
	u32 pid;
	u32 pad;
	char comm[TW_COMM_LEN];
};

struct tw_hkey {
	u32 tid;
	u32 gen;
	u64 func;
	u32 kind;
	u32 bucket;
};

/* With TW_STACKS: adds per (callback function, adder's kernel stack). */
struct tw_skey {
	u64 func;
	s64 stack_id;
};

/* Who queues work on whom. */
struct tw_pair {
	u32 adder_pid;
	u32 tid;
	u32 gen;
	u32 pad;
	u64 func;
};

struct tw_pair_val {
	u64 adds;
	u64 adder_cgroup; /* the adder's cgroup v2 id at its first add in the interval */
	char adder_comm[TW_COMM_LEN];
};

/* A task whose state the kernel let go (its task_struct was freed). */
struct tw_retired {
	u32 tid;
	u32 gen;
};

struct tw_retired_val {
	s64 depth;
	u64 ts;
};

/* An item in flight, keyed by its callback_head pointer value. */
struct tw_item {
	u64 ts;
	u64 func;
	u64 task; /* the target's task_struct: its state's key */
	u32 tid;
	u32 gen;
	u32 pid;
	u32 flags; /* TW_IT_* */
};
#define TW_IT_UNPROBED 1 /* its function was not probed when it was added */

#endif
