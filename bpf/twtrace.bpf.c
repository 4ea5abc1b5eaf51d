/* twtrace's kernel side (bcc).  See docs/format.md for what is measured.
 *
 * Compile-time switches, set by twtrace/loader.py:
 *   TW_FENTRY      attach task_work_add/run with fentry/fexit, else kprobes
 *   TW_EVENTS      send per-item events to user space
 *   TW_RINGBUF     events through a BPF ring buffer, else a perf buffer
 *   TW_FILTER      only trace tasks whose pid (tgid) or tid is in the filter maps
 *   TW_FOLLOW      add forked children of filtered processes to the filter
 *   TW_STACKS      count adds per adder kernel stack
 *
 * Items are keyed by the value of their callback_head pointer and never
 * dereferenced once they may have run: many callbacks free their container.
 */
#include <uapi/linux/ptrace.h>
#include <linux/sched.h>
#include "twtrace.h"

#define NOTIFY_MASK 0xff /* 6.12 OR-s TWAF_* flag bits into notify */

BPF_HASH(inflight, u64, struct tw_item, 65536);
BPF_HASH(tasks, u32, struct tw_task, 16384);
BPF_HASH(aggs, struct tw_key, struct tw_agg, 32768);
BPF_HASH(hists, struct tw_hkey, u64, 131072);
BPF_HASH(pairs, struct tw_pair, struct tw_pair_val, 16384);
BPF_HASH(funcs_seen, u64, u64, 4096);
BPF_ARRAY(stats, u64, TW_ST_N);

/* Per-thread state between an entry and its return. */
struct add_call {
	u64 work;
	u64 func;
	u64 ts;
	u32 tid;
	u32 pid;
	u32 notify;
	s32 stack_id;
	u32 traced; /* 0: a call not traced, kept for its place on the stack */
	u32 pad;
	char comm[TW_COMM_LEN];
};
struct cb_call {
	u64 ts;
	u64 work;
	u64 func;
	u64 queue_ns;
	u32 matched;
	u32 pad;
};
/* task_work_run nests: a callback can run task_work itself (closing an
 * io_uring file runs its task_work from inside ____fput).  Each active
 * task_work_run of a thread has its own level with its own callback. */
#define TW_MAX_NEST 4 /* a power of two: indexes are masked for the verifier */
/* The mask must survive: clang >= 19 (trixie, sid) drops it after a range
 * check it can see, and the verifier then rejects the access as unbounded. */
#define TW_MASKED(i, n) ({ u32 __i = (i); asm volatile("" : "+r"(__i)); __i & ((n) - 1); })
#define TW_LV(i) TW_MASKED(i, TW_MAX_NEST)
struct run_level {
	u64 ts;       /* task_work_run entry */
	u32 count;    /* callbacks started at this level */
	u32 cb_depth; /* probed functions active at this level; >1: direct calls */
	struct cb_call cb;
};
struct run_state {
	u32 level; /* active task_work_run calls; beyond TW_MAX_NEST untracked */
	u32 pad;
	struct run_level lv[TW_MAX_NEST];
};
struct cancel_call {
	u64 task;
	u64 cb;
	u32 is_bool;
	u32 pad;
};
/* task_work_add nests: an interrupt during one can queue another on the
 * same thread (the tick queues task_mm_cid_work or posix_cpu_timers_work).
 * Each thread keeps its calls under way on a small stack, popped LIFO. */
#define TW_ADD_NEST 4 /* a power of two: indexes are masked for the verifier */
struct add_stack {
	u32 n; /* calls under way; beyond TW_ADD_NEST untracked */
	u32 pad;
	struct add_call c[TW_ADD_NEST];
};
BPF_HASH(add_calls, u32, struct add_stack, 10240);
BPF_PERCPU_ARRAY(add_stack_zero, struct add_stack, 1); /* never written: an empty stack */
BPF_HASH(run_states, u32, struct run_state, 10240);
BPF_HASH(cancel_calls, u32, struct cancel_call, 1024);

#ifdef TW_FILTER
BPF_HASH(filter_pids, u32, u8, 10240);
BPF_HASH(filter_tids, u32, u8, 10240);
#endif

#ifdef TW_STACKS
BPF_STACK_TRACE(stack_traces, 4096);
BPF_HASH(stack_counts, struct tw_skey, u64, 8192);
#endif

#ifdef TW_EVENTS
#ifdef TW_RINGBUF
BPF_RINGBUF_OUTPUT(events, TW_RINGBUF_PAGES);
#else
BPF_PERF_OUTPUT(events);
#endif
#endif

static __always_inline void stat_inc(u32 slot)
{
	u64 *v = stats.lookup(&slot);
	if (v)
		__sync_fetch_and_add(v, 1);
}

/* Threads are keyed by tid; the idle tasks all have tid 0, one per CPU. */
static __always_inline u32 thread_key(void)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	return tid ? tid : (0x80000000 | bpf_get_smp_processor_id());
}

static __always_inline int wanted(u32 tid, u32 pid)
{
#ifdef TW_FILTER
	if (filter_pids.lookup(&pid) || filter_tids.lookup(&tid))
		return 1;
	return 0;
#else
	return 1;
#endif
}

static __always_inline int wanted_current(void)
{
	u64 pt = bpf_get_current_pid_tgid();
	return wanted((u32)pt, pt >> 32);
}

static __always_inline void emit(void *ctx, struct tw_event *ev)
{
#ifdef TW_EVENTS
#ifdef TW_RINGBUF
	if (events.ringbuf_output(ev, sizeof(*ev), 0) != 0)
		stat_inc(TW_ST_LOST);
#else
	if (events.perf_submit(ctx, ev, sizeof(*ev)) != 0)
		stat_inc(TW_ST_LOST);
#endif
#endif
}

static __always_inline u32 lat_bucket(u64 v)
{
	if (v < 16)
		return v;
	u32 msb = bpf_log2l(v) - 1;
	return (msb - 3) * 16 + ((v >> (msb - 4)) & 15);
}

static __always_inline void hist_add(u32 tid, u64 func, u32 kind, u64 v)
{
	struct tw_hkey k = {.tid = tid, .kind = kind, .func = func, .bucket = lat_bucket(v)};
	u64 zero = 0;
	u64 *n = hists.lookup_or_try_init(&k, &zero);
	if (n)
		__sync_fetch_and_add(n, 1);
	else
		stat_inc(TW_ST_EVICTED);
}

static __always_inline struct tw_agg *agg_of(u32 tid, u64 func)
{
	struct tw_key k = {.tid = tid, .func = func};
	struct tw_agg zero = {};
	struct tw_agg *a = aggs.lookup_or_try_init(&k, &zero);
	if (!a)
		stat_inc(TW_ST_EVICTED);
	return a;
}

static __always_inline struct tw_task *task_of(u32 tid, u32 pid, const char *comm)
{
	struct tw_task *t = tasks.lookup(&tid);
	if (t)
		return t;
	struct tw_task init = {.pid = pid};
	__builtin_memcpy(init.comm, comm, TW_COMM_LEN);
	tasks.update(&tid, &init);
	t = tasks.lookup(&tid);
	if (!t)
		stat_inc(TW_ST_EVICTED);
	return t;
}

static __always_inline void max_update(u64 *slot, u64 v)
{
	if (v > *slot)
		*slot = v;
}

/* ---- task_work_add ------------------------------------------------------ */

/* A callback_head being queued again is no longer queued under its previous
 * item, which was neither seen to start nor cancelled: its callback ran
 * while its function was not probed yet.  Count it here, exactly, at batch
 * precision: it ran in the target's latest task_work_run. */
static __always_inline void settle_untimed(void *ctx, u64 work, struct tw_item *old)
{
	struct tw_item it = *old;
	u64 run_ts = 0;
	struct tw_task *t = tasks.lookup(&it.tid);
	if (t) {
		__sync_fetch_and_add(&t->depth, -1);
		run_ts = t->last_run_ts;
	}
	struct tw_agg *a = agg_of(it.tid, it.func);
	if (a)
		__sync_fetch_and_add(&a->callbacks, 1);
	stat_inc(TW_ST_UNTIMED);
#ifdef TW_EVENTS
	int after = run_ts > it.ts;
	struct tw_event ev = {.kind = TW_EV_CALLBACK, .ts = after ? run_ts : it.ts, .work = work,
			      .func = it.func, .queue_ns = after ? run_ts - it.ts : 0,
			      .tid = it.tid, .pid = it.pid,
			      .flags = TW_CB_UNTIMED | (after ? TW_CB_MATCHED : 0)};
	if (t)
		__builtin_memcpy(ev.comm, t->comm, TW_COMM_LEN);
	emit(ctx, &ev);
#endif
}

static __always_inline void add_push(struct add_call *c)
{
	u32 key = thread_key();
	struct add_stack *s = add_calls.lookup(&key);
	if (!s) {
		if (!c->traced) /* nothing traced under way on this thread */
			return;
		u32 z = 0;
		struct add_stack *zero = add_stack_zero.lookup(&z);
		if (!zero)
			return;
		add_calls.update(&key, zero);
		s = add_calls.lookup(&key);
		if (!s) {
			stat_inc(TW_ST_EVICTED);
			return;
		}
	}
	u32 n = s->n;
	if (n < TW_ADD_NEST)
		s->c[TW_MASKED(n, TW_ADD_NEST)] = *c;
	s->n = n + 1;
}

/* Puts an add's item in flight and on its target's depth. */
static __always_inline void publish(void *ctx, struct add_call *c)
{
	u64 pt = bpf_get_current_pid_tgid();
	struct tw_item it = {.ts = c->ts, .func = c->func, .tid = c->tid, .pid = c->pid,
			     .adder_tid = (u32)pt, .adder_pid = pt >> 32};
	struct tw_item *old = inflight.lookup(&c->work);
	if (old)
		settle_untimed(ctx, c->work, old);
	if (inflight.update(&c->work, &it) != 0)
		stat_inc(TW_ST_EVICTED);
	struct tw_task *t = task_of(c->tid, c->pid, c->comm);
	if (t)
		__sync_fetch_and_add(&t->depth, 1);
}

/* An add as its arguments give it; 0 when its target is not traced. */
static __always_inline int add_fill(struct add_call *c, struct task_struct *task,
				    struct callback_head *work, u32 notify)
{
	c->work = (u64)work;
	bpf_probe_read_kernel(&c->tid, sizeof(c->tid), &task->pid);
	bpf_probe_read_kernel(&c->pid, sizeof(c->pid), &task->tgid);
	if (!wanted(c->tid, c->pid))
		return 0;
	c->ts = bpf_ktime_get_ns();
	c->traced = 1;
	c->notify = notify;
	c->stack_id = -1;
	/* Safe: the item cannot have run before it is published. */
	bpf_probe_read_kernel(&c->func, sizeof(c->func), &work->func);
	bpf_probe_read_kernel_str(c->comm, sizeof(c->comm), task->comm);
	return 1;
}

/* At entry: fills in the add and publishes its item; 0 when not traced. */
static __always_inline int add_begin(void *ctx, struct add_call *c, struct task_struct *task,
				     struct callback_head *work, u32 notify)
{
	if (!add_fill(c, task, work, notify))
		return 0;
#ifdef TW_STACKS
	c->stack_id = stack_traces.get_stackid(ctx, 0);
#endif
	/* Published now, confirmed at return: the target may run the item on
	 * another CPU before task_work_add returns. */
	publish(ctx, c);
	return 1;
}

/* kprobes: the return has no arguments, so calls under way are kept on a
 * per-thread stack (an interrupt's nested add is skipped whole). */
static __always_inline int add_entry(void *ctx, struct task_struct *task,
				     struct callback_head *work, u32 notify)
{
	struct add_call c = {};
	add_begin(ctx, &c, task, work, notify);
	add_push(&c); /* an untraced call keeps a traced outer call's place */
	return 0;
}

/* The accounting of one add, done at its return. */
static __always_inline void add_done(void *ctx, struct add_call *c, int ret)
{
	u64 one = 1;
	if (!funcs_seen.lookup(&c->func))
		funcs_seen.update(&c->func, &one);
	struct tw_agg *a = agg_of(c->tid, c->func);
	struct tw_task *t = tasks.lookup(&c->tid);
	if (a) {
		__sync_fetch_and_add(&a->adds, 1);
		if ((c->notify & NOTIFY_MASK) < 32)
			a->notify_mask |= 1ULL << (c->notify & NOTIFY_MASK);
		if (ret != 0)
			__sync_fetch_and_add(&a->failed_adds, 1);
	}
	if (ret != 0) {
		inflight.delete(&c->work);
		if (t)
			__sync_fetch_and_add(&t->depth, -1);
	} else if (t && t->depth > t->max_depth) {
		t->max_depth = t->depth;
	}
	if (t) /* the name it has now: exec changes it after the first add */
		__builtin_memcpy(t->comm, c->comm, TW_COMM_LEN);

	u64 pt = bpf_get_current_pid_tgid();
	struct tw_pair pk = {.adder_pid = pt >> 32, .tid = c->tid, .func = c->func};
	struct tw_pair_val *pv = pairs.lookup(&pk);
	if (!pv) {
		struct tw_pair_val init = {};
		bpf_get_current_comm(init.adder_comm, sizeof(init.adder_comm));
		pairs.update(&pk, &init);
		pv = pairs.lookup(&pk);
	}
	if (pv)
		__sync_fetch_and_add(&pv->adds, 1);
#ifdef TW_STACKS
	struct tw_skey sk = {.func = c->func, .stack_id = c->stack_id};
	u64 zero = 0;
	u64 *sn = stack_counts.lookup_or_try_init(&sk, &zero);
	if (sn)
		__sync_fetch_and_add(sn, 1);
	else
		stat_inc(TW_ST_EVICTED);
#endif

#ifdef TW_EVENTS
	struct tw_event ev = {.kind = TW_EV_ADD, .ts = c->ts, .work = c->work, .func = c->func,
			      .tid = c->tid, .pid = c->pid, .adder_tid = (u32)pt,
			      .adder_pid = pt >> 32, .ret = ret, .notify = c->notify,
			      .stack_id = c->stack_id};
	__builtin_memcpy(ev.comm, c->comm, TW_COMM_LEN);
	bpf_get_current_comm(ev.adder_comm, sizeof(ev.adder_comm));
	emit(ctx, &ev);
#endif
}

/* Pops this thread's innermost add under way into *out; its index, or -1. */
static __always_inline int add_return(void *ctx, int ret)
{
	u32 key = thread_key();
	struct add_stack *s = add_calls.lookup(&key);
	if (!s || s->n == 0)
		return 0;
	u32 n = s->n - 1;
	s->n = n;
	/* A copy: an interrupt may push onto this slot while we work. */
	struct add_call cc = {};
	if (n < TW_ADD_NEST)
		cc = s->c[TW_MASKED(n, TW_ADD_NEST)];
	if (n == 0)
		add_calls.delete(&key);
	if (cc.traced)
		add_done(ctx, &cc, ret);
	return 0;
}

#ifdef TW_FENTRY
/* fentry/fexit programs do not nest in themselves: the kernel skips a BPF
 * trampoline program entered on a CPU where it is already running.  An add
 * from an interrupt (the tick queues task_mm_cid_work and posix CPU timer
 * work) that lands while an add program runs loses its entry or its return.
 * So with fentry, calls under way are keyed by thread and work pointer (no
 * stack order to break), an entry that lands while the fexit program runs
 * completes its add at once (its own fexit will be skipped: assumed
 * successful, as an add only fails on an exiting task), and a return whose
 * entry was skipped rebuilds the add from its arguments. */
struct add_key {
	u32 thread;
	u32 pad;
	u64 work;
};
BPF_HASH(add_pending, struct add_key, struct add_call, 10240);
BPF_PERCPU_ARRAY(in_fexit, u32, 1);

static __always_inline u32 *fexit_flag(void)
{
	u32 z = 0;
	return in_fexit.lookup(&z);
}

static __always_inline int add_fentry(void *ctx, struct task_struct *task,
				      struct callback_head *work, u32 notify)
{
	struct add_call c = {};
	if (!add_begin(ctx, &c, task, work, notify))
		return 0;
	u32 *busy = fexit_flag();
	if (busy && *busy) {
		stat_inc(TW_ST_RECOVERED);
		add_done(ctx, &c, 0);
		return 0;
	}
	struct add_key k = {.thread = thread_key(), .work = (u64)work};
	if (add_pending.update(&k, &c) != 0)
		stat_inc(TW_ST_EVICTED);
	return 0;
}

static __always_inline void add_fexit_body(void *ctx, struct task_struct *task,
					   struct callback_head *work, u32 notify, int ret)
{
	struct add_key k = {.thread = thread_key(), .work = (u64)work};
	struct add_call *p = add_pending.lookup(&k);
	if (p) {
		struct add_call cc = *p;
		add_pending.delete(&k);
		add_done(ctx, &cc, ret);
		return;
	}
	/* Its entry was skipped: count it from here.  (Records of calls under
	 * way at start-up are kept, so a missing one means exactly this.) */
	struct add_call cc = {};
	if (!add_fill(&cc, task, work, notify))
		return;
	stat_inc(TW_ST_RECOVERED);
	publish(ctx, &cc); /* add_done takes it back if the add failed */
	add_done(ctx, &cc, ret);
}

static __always_inline int add_fexit(void *ctx, struct task_struct *task,
				     struct callback_head *work, u32 notify, int ret)
{
	u32 *busy = fexit_flag();
	if (busy)
		*busy = 1;
	add_fexit_body(ctx, task, work, notify, ret);
	if (busy)
		*busy = 0;
	return 0;
}
#endif

/* ---- task_work_run ------------------------------------------------------ */

static __always_inline int run_entry(void)
{
	if (!wanted_current())
		return 0;
	u32 key = thread_key();
	struct run_state zero = {};
	struct run_state *s = run_states.lookup_or_try_init(&key, &zero);
	if (!s) {
		stat_inc(TW_ST_EVICTED);
		return 0;
	}
	u64 now = bpf_ktime_get_ns();
	u32 l = s->level;
	/* task_work_run nests only inside a callback.  With none running at the
	 * current level, earlier returns were missed: this thread was inside
	 * when a probe was attached or a BPF trampoline rebuilt (by twtrace's own
	 * start-up, or another tool).  Start over rather than drift forever. */
	if (l > TW_MAX_NEST || (l > 0 && s->lv[TW_LV(l - 1)].cb_depth == 0)) {
		stat_inc(TW_ST_RESYNC);
		l = 0;
	}
	s->level = l + 1;
	if (l < TW_MAX_NEST) {
		struct run_level *lv = &s->lv[TW_LV(l)];
		lv->ts = now;
		lv->count = 0;
		lv->cb_depth = 0;
	}
	/* Items added before this instant are all run (or were cancelled) by
	 * the time this call returns: user space settles items whose callback
	 * ran unprobed with it and last_run_end. */
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct tw_task *t = tasks.lookup(&tid);
	if (t)
		t->last_run_ts = now;
	return 0;
}

static __always_inline int run_return(void *ctx)
{
	u32 key = thread_key();
	struct run_state *s = run_states.lookup(&key);
	if (!s || s->level == 0)
		return 0;
	u32 l = s->level - 1;
	s->level = l;
	if (l < TW_MAX_NEST) {
		struct run_level *lv = &s->lv[TW_LV(l)];
		if (lv->count) {
			u64 pt = bpf_get_current_pid_tgid();
			u32 tid = (u32)pt;
			struct tw_task *t = tasks.lookup(&tid);
			if (t)
				__sync_fetch_and_add(&t->runs, 1);
#ifdef TW_EVENTS
			struct tw_event ev = {.kind = TW_EV_RUN, .ts = lv->ts,
					      .dur_ns = bpf_ktime_get_ns() - lv->ts, .tid = tid,
					      .pid = pt >> 32, .count = lv->count};
			bpf_get_current_comm(ev.comm, sizeof(ev.comm));
			emit(ctx, &ev);
#endif
		}
	}
	if (l == 0) {
		run_states.delete(&key);
		u32 tid = (u32)bpf_get_current_pid_tgid();
		struct tw_task *t = tasks.lookup(&tid);
		if (t)
			t->last_run_end = bpf_ktime_get_ns();
	}
	return 0;
}

/* The level whose callbacks a probe on this thread belongs to, or NULL when
 * no tracked task_work_run is active (the function was called directly). */
static __always_inline struct run_level *current_level(u32 key)
{
	struct run_state *s = run_states.lookup(&key);
	if (!s || s->level == 0 || s->level > TW_MAX_NEST)
		return 0;
	return &s->lv[TW_LV(s->level - 1)];
}

/* ---- callbacks (kprobes attached per callback function by user space) --- */

int cb_entry(struct pt_regs *ctx)
{
	u32 key = thread_key();
	struct run_level *lv = current_level(key);
	if (!lv)
		return 0;
	/* task_work_run calls callbacks one after another; a probed function
	 * entered inside another one at the same level is a direct call
	 * (io_uring's handlers inside tctx_task_work): not a queued item, and
	 * its return must not end the outer callback. */
	if (lv->cb_depth > 0) {
		if (lv->cb_depth < 64)
			lv->cb_depth++;
		stat_inc(TW_ST_NESTED);
		return 0;
	}
	lv->cb_depth = 1;
	struct cb_call c = {.ts = bpf_ktime_get_ns(), .work = PT_REGS_PARM1(ctx)};
	struct tw_item *it = inflight.lookup(&c.work);
	if (it) {
		c.func = it->func;
		c.queue_ns = c.ts - it->ts;
		c.matched = 1;
		u32 tid = it->tid;
		inflight.delete(&c.work);
		struct tw_task *t = tasks.lookup(&tid);
		if (t)
			__sync_fetch_and_add(&t->depth, -1);
	} else {
		/* Still valid: the callback has not started. */
		bpf_probe_read_kernel(&c.func, sizeof(c.func), &((struct callback_head *)c.work)->func);
		stat_inc(TW_ST_UNMATCHED);
	}
	lv->count++;
	lv->cb = c;
	return 0;
}

int cb_return(struct pt_regs *ctx)
{
	u32 key = thread_key();
	struct run_level *lv = current_level(key);
	if (!lv || lv->cb_depth == 0)
		return 0;
	if (--lv->cb_depth > 0)
		return 0;
	struct cb_call c = lv->cb;
	u64 now = bpf_ktime_get_ns();
	u64 run = now - c.ts;
	u64 pt = bpf_get_current_pid_tgid();
	u32 tid = (u32)pt;
	struct tw_agg *a = agg_of(tid, c.func);
	if (a) {
		__sync_fetch_and_add(&a->callbacks, 1);
		__sync_fetch_and_add(&a->run_sum, run);
		max_update(&a->run_max, run);
		if (c.matched) {
			__sync_fetch_and_add(&a->matched, 1);
			__sync_fetch_and_add(&a->queue_sum, c.queue_ns);
			max_update(&a->queue_max, c.queue_ns);
		}
	}
	hist_add(tid, c.func, TW_H_RUN, run);
	if (c.matched)
		hist_add(tid, c.func, TW_H_QUEUE, c.queue_ns);
	if (!tasks.lookup(&tid)) {
		char comm[TW_COMM_LEN];
		bpf_get_current_comm(comm, sizeof(comm));
		task_of(tid, pt >> 32, comm);
	}
#ifdef TW_EVENTS
	struct tw_event ev = {.kind = TW_EV_CALLBACK, .ts = c.ts, .work = c.work,
			      .func = c.func, .queue_ns = c.queue_ns, .dur_ns = run,
			      .tid = tid, .pid = pt >> 32, .flags = c.matched ? TW_CB_MATCHED : 0};
	bpf_get_current_comm(ev.comm, sizeof(ev.comm));
	emit(ctx, &ev);
#endif
	return 0;
}

/* ---- cancel variants ----------------------------------------------------
 * Which exist, and whether task_work_cancel returns the item or a bool, is
 * detected by user space.  Variants call each other; only the outermost
 * call of a thread counts. */

static __always_inline int cancel_entry(struct task_struct *task, u64 cb, u32 is_bool)
{
	u32 key = thread_key();
	if (cancel_calls.lookup(&key))
		return 0;
	struct cancel_call c = {.task = (u64)task, .cb = cb, .is_bool = is_bool};
	cancel_calls.update(&key, &c);
	return 0;
}

int cancel_ptr_entry(struct pt_regs *ctx)
{
	return cancel_entry((struct task_struct *)PT_REGS_PARM1(ctx), 0, 0);
}

int cancel_bool_entry(struct pt_regs *ctx)
{
	return cancel_entry((struct task_struct *)PT_REGS_PARM1(ctx), PT_REGS_PARM2(ctx), 1);
}

int cancel_return(struct pt_regs *ctx)
{
	u32 key = thread_key();
	struct cancel_call *c = cancel_calls.lookup(&key);
	if (!c)
		return 0;
	u64 ret = PT_REGS_RC(ctx);
	u64 work = c->is_bool ? ((ret & 0xff) ? c->cb : 0) : ret;
	struct task_struct *task = (struct task_struct *)c->task;
	cancel_calls.delete(&key);
	if (!work)
		return 0;
	u32 tid = 0, pid = 0;
	bpf_probe_read_kernel(&tid, sizeof(tid), &task->pid);
	bpf_probe_read_kernel(&pid, sizeof(pid), &task->tgid);
	if (!wanted(tid, pid))
		return 0;
	u64 func = 0;
	struct tw_item *it = inflight.lookup(&work);
	if (it) {
		func = it->func;
		inflight.delete(&work);
		struct tw_task *t = tasks.lookup(&tid);
		if (t)
			__sync_fetch_and_add(&t->depth, -1);
	} else {
		/* Unlinked, not run: still owned by the canceller. */
		bpf_probe_read_kernel(&func, sizeof(func), &((struct callback_head *)work)->func);
	}
	struct tw_agg *a = agg_of(tid, func);
	if (a)
		__sync_fetch_and_add(&a->cancels, 1);
#ifdef TW_EVENTS
	struct tw_event ev = {.kind = TW_EV_CANCEL, .ts = bpf_ktime_get_ns(), .work = work,
			      .func = func, .tid = tid, .pid = pid};
	bpf_probe_read_kernel_str(ev.comm, sizeof(ev.comm), task->comm);
	emit(ctx, &ev);
#endif
	return 0;
}

/* ---- following a command's process tree --------------------------------- */

#ifdef TW_FOLLOW
/* Threads of twtrace that start a traced command: their children are traced
 * from before they first run, while they themselves are not. */
BPF_HASH(spawners, u32, u8, 16);

TRACEPOINT_PROBE(sched, sched_process_fork)
{
	u32 parent = args->parent_pid, child = args->child_pid;
	u64 pt = bpf_get_current_pid_tgid();
	u32 ppid = pt >> 32;
	u8 one = 1;
	/* parent_pid is the forking thread; follow whole processes.  This runs
	 * before the child is first woken, so nothing it queues is missed. */
	if (filter_pids.lookup(&ppid) || filter_tids.lookup(&parent) || spawners.lookup(&parent))
		filter_pids.update(&child, &one);
	return 0;
}
#endif

/* ---- attachment of task_work_add / task_work_run ------------------------ */

#ifdef TW_FENTRY
KFUNC_PROBE(task_work_add, struct task_struct *task, struct callback_head *work, int notify)
{
	return add_fentry(ctx, task, work, (u32)notify);
}

KRETFUNC_PROBE(task_work_add, struct task_struct *task, struct callback_head *work, int notify,
	       int ret)
{
	return add_fexit(ctx, task, work, (u32)notify, ret);
}

/* KFUNC_PROBE(ev) with no arguments leaves a dangling comma in old bcc
 * (0.18: "args" instead of "##args"). Bccs without module support name the
 * programs kfunc__EV, which can be written out directly. */
#ifdef MODULE_KFUNC_PROBE
#define TW_KFUNC_NOARGS(ev) KFUNC_PROBE(ev)
#define TW_KRETFUNC_NOARGS(ev) KRETFUNC_PROBE(ev)
#else
#define TW_KFUNC_NOARGS(ev) int kfunc__##ev(unsigned long long *ctx)
#define TW_KRETFUNC_NOARGS(ev) int kretfunc__##ev(unsigned long long *ctx)
#endif

TW_KFUNC_NOARGS(task_work_run)
{
	return run_entry();
}

TW_KRETFUNC_NOARGS(task_work_run)
{
	return run_return(ctx);
}
#else
int add_kprobe(struct pt_regs *ctx)
{
	return add_entry(ctx, (struct task_struct *)PT_REGS_PARM1(ctx),
			 (struct callback_head *)PT_REGS_PARM2(ctx), (u32)PT_REGS_PARM3(ctx));
}

int add_kretprobe(struct pt_regs *ctx)
{
	return add_return(ctx, (int)PT_REGS_RC(ctx));
}

int run_kprobe(struct pt_regs *ctx)
{
	return run_entry();
}

int run_kretprobe(struct pt_regs *ctx)
{
	return run_return(ctx);
}
#endif
