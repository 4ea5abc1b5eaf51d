/* twtrace's kernel side (bcc).  See docs/format.md for what is measured.
 *
 * Compile-time switches, set by twtrace/loader.py:
 *   TW_FENTRY      attach task_work_add/run with fentry/fexit, else kprobes
 *   TW_CB_FENTRY   a list of TW_CB(func) lines: callbacks probed with fentry/fexit
 *   TW_CAS         the BPF instruction set has compare-and-swap (5.12+)
 *   TW_EVENTS      send per-item events to user space
 *   TW_RINGBUF     events through a BPF ring buffer, else a perf buffer
 *   TW_FILTER      only trace tasks whose pid (tgid) or tid is in the filter maps
 *   TW_FOLLOW      add forked children of filtered processes to the filter
 *   TW_STACKS      count adds per adder kernel stack
 *   TW_CGROUP_FILTER  only trace tasks in the cgroups of filter_cgroups
 *   TW_WORK_EXITED address of the kernel's work_exited sentinel, when known
 *
 * The design, in short:
 * - Only program runs whose clock is inside the window [start_ns, end_ns)
 *   count; user space opens it after the last probe is attached.
 * - Each add is accounted in one program, at task_work_add's entry: an add
 *   can only fail on a target whose task_works is already the exit
 *   sentinel, which is read there.  One program means no half-seen add when
 *   the kernel skips a program run.
 * - Per-thread state (queue depth, task_work_run levels, cancel calls) lives
 *   in one entry per task_struct, created once per task and deleted when
 *   the kernel frees the task: one lookup per program run.
 * - Aggregates go to one of two generations of maps; user space flips the
 *   generation, waits out an RCU grace period (no program still writes the
 *   old one) and drains it, so the kernel holds one interval of activity.
 * - Items are keyed by the value of their callback_head pointer and never
 *   dereferenced once they may have run: many callbacks free their container.
 */
#include <uapi/linux/ptrace.h>
#ifdef TW_OFF_PID
/* Field offsets from the running kernel's BTF (twtrace/btf.py): parsing
 * <linux/sched.h> and the cgroup headers is most of what compiling this
 * program costs. */
struct task_struct;
struct css_set;
struct cgroup;
struct cgroup_subsys_state;
struct kernfs_node;
#define KFIELD(p, field, off) ((void *)(p) + (off))
#else
#include <linux/sched.h>
#include <linux/cgroup-defs.h>
#include <linux/kernfs.h>
#define KFIELD(p, field, off) (&(p)->field)
#endif
#define TASK_PID(t) KFIELD(t, pid, TW_OFF_PID)
#define TASK_TGID(t) KFIELD(t, tgid, TW_OFF_TGID)
#define TASK_START_TIME(t) KFIELD(t, start_time, TW_OFF_START_TIME)
#define TASK_COMM(t) KFIELD(t, comm, TW_OFF_COMM)
#define TASK_WORKS(t) KFIELD(t, task_works, TW_OFF_TASK_WORKS)
#define TASK_CGROUPS(t) KFIELD(t, cgroups, TW_OFF_TASK_CGROUPS)
#define CSS_SET_DFL_CGRP(cs) KFIELD(cs, dfl_cgrp, TW_OFF_CSS_SET_DFL_CGRP)
#define CGROUP_KN(cg) KFIELD(cg, kn, TW_OFF_CGROUP_KN)
#define CGROUP_PARENT_CSS(cg) KFIELD(cg, self.parent, TW_OFF_CGROUP_SELF + TW_OFF_CSS_PARENT)
#define CSS_CGROUP(css) KFIELD(css, cgroup, TW_OFF_CSS_CGROUP)
#define KERNFS_ID(kn) KFIELD(kn, id, TW_OFF_KERNFS_ID)
#include "twtrace.h"

#define NOTIFY_MASK 0xff /* 6.12 OR-s TWAF_* flag bits into notify */
#define TW_ESRCH 3

#ifndef TW_TASKS_MAX
#define TW_TASKS_MAX 65536
#endif
#ifndef TW_AGGS_MAX
#define TW_AGGS_MAX 16384
#endif
#ifndef TW_HISTS_MAX
#define TW_HISTS_MAX 65536
#endif

BPF_ARRAY(control, struct tw_ctl, 1);
BPF_ARRAY(stats, u64, TW_ST_N);
BPF_HASH(inflight, u64, struct tw_item, 65536);
BPF_HASH(probed, u64, u8, 4096); /* callback functions with a probe attached */
BPF_HASH(retired, struct tw_retired, struct tw_retired_val, 16384);

/* The drained maps, two generations each. */
BPF_HASH(aggs0, struct tw_key, struct tw_agg, TW_AGGS_MAX);
BPF_HASH(aggs1, struct tw_key, struct tw_agg, TW_AGGS_MAX);
BPF_HASH(hists0, struct tw_hkey, u64, TW_HISTS_MAX);
BPF_HASH(hists1, struct tw_hkey, u64, TW_HISTS_MAX);
BPF_HASH(pairs0, struct tw_pair, struct tw_pair_val, TW_AGGS_MAX);
BPF_HASH(pairs1, struct tw_pair, struct tw_pair_val, TW_AGGS_MAX);
/* bcc rewrites map calls in place, so each generation is named outright. */
static __always_inline struct tw_agg *aggs_get(u32 gen, struct tw_key *k)
{
	return gen ? aggs1.lookup(k) : aggs0.lookup(k);
}
static __always_inline void aggs_put(u32 gen, struct tw_key *k, struct tw_agg *v)
{
	if (gen)
		aggs1.insert(k, v);
	else
		aggs0.insert(k, v);
}
static __always_inline u64 *hists_get(u32 gen, struct tw_hkey *k)
{
	return gen ? hists1.lookup(k) : hists0.lookup(k);
}
static __always_inline void hists_put(u32 gen, struct tw_hkey *k, u64 *v)
{
	if (gen)
		hists1.insert(k, v);
	else
		hists0.insert(k, v);
}
static __always_inline struct tw_pair_val *pairs_get(u32 gen, struct tw_pair *k)
{
	return gen ? pairs1.lookup(k) : pairs0.lookup(k);
}
static __always_inline void pairs_put(u32 gen, struct tw_pair *k, struct tw_pair_val *v)
{
	if (gen)
		pairs1.insert(k, v);
	else
		pairs0.insert(k, v);
}

/* Per-thread state between an entry and its return. */
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
	s64 unprobed; /* unprobed items queued before this level began: all run by its end */
	struct cb_call cb;
};
/* Cancel variants call each other: each call under way has its record. */
#define TW_CANCEL_NEST 4
struct cancel_call {
	u64 task;
	u64 cb;
	u32 is_bool;
	u32 pad;
};

/* One per task_struct that twtrace has seen. */
struct tstate {
	u32 tid;
	u32 pid;
	u32 gen;     /* incarnation: (tid, gen) names this task in user space */
	u32 traced;  /* passes the filters */
	u64 task;    /* its task_struct (the key), to refresh cgroup from */
	u64 cgroup;  /* cgroup v2 id, refreshed when the task moves and per interval */
	s64 depth;   /* probed items queued, not yet started or cancelled */
	s64 unprobed; /* items of unprobed functions queued, not yet known to have run */
	u64 last_run_ts;  /* entry of the latest task_work_run */
	u64 last_run_end; /* return of the latest outermost task_work_run */
	char comm[TW_COMM_LEN];
	/* Whether the function of the task's latest self-add is probed, as of
	 * probed_ver: a task adds to itself from one CPU at a time, so only
	 * the task writes these. */
	u64 pr_func;
	u32 pr_ver;
	u32 pr_yes;
	u32 level; /* active task_work_run calls; beyond TW_MAX_NEST untracked */
	u32 ncancel;
	struct run_level lv[TW_MAX_NEST];
	struct cancel_call cancel[TW_CANCEL_NEST];
};
BPF_HASH(tasks, u64, struct tstate, TW_TASKS_MAX);
BPF_PERCPU_ARRAY(tstate_zero, struct tstate, 1); /* scratch for a new entry */

#ifdef TW_FILTER
BPF_HASH(filter_pids, u32, u8, 65536);
BPF_HASH(filter_tids, u32, u8, 1024);
#endif
#ifdef TW_CGROUP_FILTER
/* The cgroup v2 ids asked for and all their descendants (user space seeds
 * them; cgroup_mkdir below adds new ones). */
BPF_HASH(filter_cgroups, u64, u8, 16384);
#endif

#ifdef TW_STACKS
BPF_STACK_TRACE(stack_traces, 4096);
BPF_HASH(stacks0, struct tw_skey, u64, 8192);
BPF_HASH(stacks1, struct tw_skey, u64, 8192);
#endif

#ifdef TW_EVENTS
#ifdef TW_RINGBUF
BPF_RINGBUF_OUTPUT(events, TW_RINGBUF_PAGES);
BPF_PERCPU_ARRAY(event_seq, u64, 1); /* events sent on this CPU, for the wakeups */
#else
BPF_PERF_OUTPUT(events);
#endif
#endif

/* bpf_ringbuf_output's flags (uapi; enums, so not testable with #ifdef) */
#define TW_RB_NO_WAKEUP 1
#define TW_RB_FORCE_WAKEUP 2
#define TW_WAKE_EVERY 64 /* a power of two */

static __always_inline void stat_add(u32 slot, u64 n)
{
	u64 *v = stats.lookup(&slot);
	if (v)
		__sync_fetch_and_add(v, n);
}
#define stat_inc(slot) stat_add(slot, 1)

/* The control entry when `now` is inside the window, else NULL.  Every
 * program reads its clock before the entry: user space writes each edge
 * before the edge's instant comes, so a run whose clock is past an edge
 * finds that edge written, on every CPU. */
static __always_inline struct tw_ctl *window(u64 now)
{
	u32 z = 0;
	struct tw_ctl *c = control.lookup(&z);
	if (!c || now < c->start_ns || now >= c->end_ns)
		return 0;
	return c;
}

static __always_inline void atomic_max(u64 *slot, u64 v)
{
#ifdef TW_CAS
	/* Several CPUs may raise the same maximum at once. */
	for (int i = 0; i < 8; i++) {
		u64 old = *(volatile u64 *)slot;
		if (v <= old)
			return;
		if (__sync_val_compare_and_swap(slot, old, v) == old)
			return;
	}
#else
	if (v > *slot)
		*slot = v;
#endif
}

static __always_inline void emit(void *ctx, struct tw_event *ev)
{
#ifdef TW_EVENTS
#ifdef TW_RINGBUF
	/* A wakeup per event costs the adder an irq_work and the reader a poll
	 * per event.  One in TW_WAKE_EVERY per CPU wakes the reader, which also
	 * reads on its own at least every 100 ms (Loader.poll); a reader that
	 * has fallen behind is not waiting anyway. */
	u32 z = 0;
	u64 *seq = event_seq.lookup(&z);
	u64 wake = TW_RB_NO_WAKEUP;
	if (seq && ((*seq)++ & (TW_WAKE_EVERY - 1)) == 0)
		wake = TW_RB_FORCE_WAKEUP;
	if (events.ringbuf_output(ev, sizeof(*ev), wake) != 0)
		stat_inc(TW_ST_LOST);
#else
	/* Losses here are counted by the perf buffer's own lost callback. */
	events.perf_submit(ctx, ev, sizeof(*ev));
#endif
#endif
}

/* ---- per-task state ----------------------------------------------------- */

static __always_inline int filter_passes(u32 tid, u32 pid)
{
#ifdef TW_FILTER
	return filter_pids.lookup(&pid) || filter_tids.lookup(&tid);
#else
	return 1;
#endif
}

/* The cgroup v2 id of task t: its default-hierarchy cgroup's kernfs node id,
 * which is also the inode number of the cgroup's directory.  Four reads, so
 * taken only when a task, or an interval's aggregate of it, is new, or when
 * the task moves; 0 if unreadable. */
static __always_inline u64 cgroup_of(struct task_struct *t)
{
	struct css_set *cs = 0;
	struct cgroup *cg = 0;
	struct kernfs_node *kn = 0;
	u64 id = 0;
	bpf_probe_read_kernel(&cs, sizeof(cs), TASK_CGROUPS(t));
	if (!cs)
		return 0;
	bpf_probe_read_kernel(&cg, sizeof(cg), CSS_SET_DFL_CGRP(cs));
	if (!cg)
		return 0;
	bpf_probe_read_kernel(&kn, sizeof(kn), CGROUP_KN(cg));
	if (!kn)
		return 0;
	bpf_probe_read_kernel(&id, sizeof(id), KERNFS_ID(kn));
	return id;
}

static __always_inline int cgroup_passes(u64 cg)
{
#ifdef TW_CGROUP_FILTER
	return filter_cgroups.lookup(&cg) != 0;
#else
	return 1;
#endif
}

static __always_inline u32 traced_now(struct tstate *s)
{
	/* twtrace's own closes queue ____fput on its threads: not traced. */
	return s->pid != TW_SELF_PID && filter_passes(s->tid, s->pid) && cgroup_passes(s->cgroup);
}

/* The state of task t, created on first sight.  Creation is the only insert
 * a task ever costs; racing creators on two CPUs agree on one entry. */
static __always_inline struct tstate *state_of(struct task_struct *t)
{
	u64 key = (u64)t;
	struct tstate *s = tasks.lookup(&key);
	if (s)
		return s;
	u32 z = 0;
	struct tstate *init = tstate_zero.lookup(&z);
	if (!init)
		return 0;
	u32 tid = 0, pid = 0;
	bpf_probe_read_kernel(&tid, sizeof(tid), TASK_PID(t));
	bpf_probe_read_kernel(&pid, sizeof(pid), TASK_TGID(t));
	init->tid = tid;
	init->pid = pid;
	init->task = key;
	init->cgroup = cgroup_of(t);
	init->traced = traced_now(init);
	/* The incarnation: from the task's start time, which differs between
	 * two tasks that share a tid (no fetch-and-add: not every bcc's clang
	 * targets an instruction set that returns the old value). */
	u64 st = 0;
	bpf_probe_read_kernel(&st, sizeof(st), TASK_START_TIME(t));
	init->gen = (u32)(st ^ (st >> 32)) | 1;
	bpf_probe_read_kernel_str(init->comm, sizeof(init->comm), TASK_COMM(t));
	if (tasks.insert(&key, init) != 0 && !tasks.lookup(&key)) {
		stat_inc(TW_ST_FULL_TASKS);
		return 0;
	}
	return tasks.lookup(&key);
}

static __always_inline struct tstate *current_state(void)
{
	return state_of((struct task_struct *)bpf_get_current_task());
}

static __always_inline struct tw_agg *agg_of(u32 gen, struct tstate *s, u64 func)
{
	struct tw_key k = {.tid = s->tid, .gen = s->gen, .func = func};
	struct tw_agg *a = aggs_get(gen, &k);
	if (a) {
		/* exec renames a task mid-interval (its first items are often
		 * queued before the exec, e.g. the shell closing a redirection):
		 * the aggregate carries the name the task has now. */
		u64 a0, a1, s0, s1;
		__builtin_memcpy(&a0, a->comm, 8);
		__builtin_memcpy(&a1, a->comm + 8, 8);
		__builtin_memcpy(&s0, s->comm, 8);
		__builtin_memcpy(&s1, s->comm + 8, 8);
		if (a0 != s0 || a1 != s1)
			__builtin_memcpy(a->comm, s->comm, TW_COMM_LEN);
		return a;
	}
	/* Once per task and function per interval: cheap enough to refresh the
	 * cgroup of threads whose process moved (only the leader's move is
	 * reported, below). */
	s->cgroup = cgroup_of((struct task_struct *)s->task);
	struct tw_agg init = {.pid = s->pid, .cgroup = s->cgroup};
	__builtin_memcpy(init.comm, s->comm, TW_COMM_LEN);
	aggs_put(gen, &k, &init);
	a = aggs_get(gen, &k);
	if (!a)
		stat_inc(TW_ST_FULL_AGGS);
	return a;
}

static __always_inline u32 lat_bucket(u64 v)
{
	if (v < 16)
		return v;
	u32 msb = bpf_log2l(v) - 1;
	return (msb - 3) * 16 + ((v >> (msb - 4)) & 15);
}

static __always_inline void hist_add(u32 gen, struct tstate *s, u64 func, u32 kind, u64 v)
{
	struct tw_hkey k = {.tid = s->tid, .gen = s->gen, .func = func, .kind = kind,
			    .bucket = lat_bucket(v)};
	u64 *n = hists_get(gen, &k);
	if (!n) {
		u64 zero = 0;
		hists_put(gen, &k, &zero);
		n = hists_get(gen, &k);
	}
	if (n)
		__sync_fetch_and_add(n, 1);
	else
		stat_inc(TW_ST_FULL_HISTS);
}

/* ---- task_work_add ------------------------------------------------------ */

/* A callback_head queued again is no longer queued under its previous item,
 * which was neither seen to start nor cancelled: its callback ran unseen
 * (unprobed function, or a probe run the kernel skipped).  It ran in the
 * target's latest task_work_run, so that run bounds its queue latency. */
static __always_inline void settle_unseen(void *ctx, u32 gen, u64 work, struct tw_item *old,
					  u64 now)
{
	struct tw_item it = *old;
	struct tstate *s = tasks.lookup(&it.task);
	u64 run_ts = 0;
	if (s && s->gen == it.gen) {
		run_ts = s->last_run_ts;
		/* An unprobed item is off the depth once its run ended. */
		if (!(it.flags & TW_IT_UNPROBED))
			__sync_fetch_and_add(&s->depth, -1);
		struct tw_agg *a = agg_of(gen, s, it.func);
		if (a) {
			__sync_fetch_and_add(&a->callbacks, 1);
			__sync_fetch_and_add(&a->matched, 1);
		}
	}
	stat_inc(TW_ST_UNTIMED);
#ifdef TW_EVENTS
	u64 lo = run_ts > it.ts ? run_ts - it.ts : 0;
	struct tw_event ev = {.kind = TW_EV_CALLBACK, .ts = run_ts > it.ts ? run_ts : it.ts,
			      .work = work, .func = it.func, .queue_ns = lo,
			      .dur_ns = now - it.ts, .tid = it.tid, .pid = it.pid, .gen = it.gen,
			      .flags = TW_CB_UNTIMED | TW_CB_MATCHED};
	if (s)
		__builtin_memcpy(ev.comm, s->comm, TW_COMM_LEN);
	emit(ctx, &ev);
#endif
}

/* Whether task_work_add will fail: it does exactly when the target's list
 * is the exit sentinel (set once, at the target's last task_work_run). */
static __always_inline int add_will_fail(struct task_struct *task)
{
#ifdef TW_WORK_EXITED
	u64 head = 0;
	bpf_probe_read_kernel(&head, sizeof(head), TASK_WORKS(task));
	return head == TW_WORK_EXITED;
#else
	return 0;
#endif
}

static __always_inline void count_pair(u32 gen, struct tstate *s, u64 func, u64 pt)
{
	struct tw_pair pk = {.adder_pid = pt >> 32, .tid = s->tid, .gen = s->gen, .func = func};
	struct tw_pair_val *pv = pairs_get(gen, &pk);
	if (!pv) {
		struct tw_pair_val init = {.adder_cgroup = bpf_get_current_cgroup_id()};
		bpf_get_current_comm(init.adder_comm, sizeof(init.adder_comm));
		pairs_put(gen, &pk, &init);
		pv = pairs_get(gen, &pk);
	}
	if (pv)
		__sync_fetch_and_add(&pv->adds, 1);
	else
		stat_inc(TW_ST_FULL_PAIRS);
}

static __always_inline s32 take_stack(void *ctx, u32 gen, u64 func)
{
	s32 id = -1;
#ifdef TW_STACKS
	id = stack_traces.get_stackid(ctx, 0);
	if (id == -17 /* EEXIST: another stack has this hash */)
		stat_inc(TW_ST_STACK_COLL);
	else if (id < 0)
		stat_inc(TW_ST_STACK_ERR);
	struct tw_skey sk = {.func = func, .stack_id = id};
	u64 *n = gen ? stacks1.lookup(&sk) : stacks0.lookup(&sk);
	if (!n) {
		u64 zero = 0;
		if (gen)
			stacks1.insert(&sk, &zero);
		else
			stacks0.insert(&sk, &zero);
		n = gen ? stacks1.lookup(&sk) : stacks0.lookup(&sk);
	}
	if (n)
		__sync_fetch_and_add(n, 1);
	else
		stat_inc(TW_ST_FULL_STACKS);
#endif
	return id;
}

static __always_inline int is_probed(struct tw_ctl *c, struct tstate *s, u64 func, int self_add)
{
	if (!self_add)
		return probed.lookup(&func) != 0;
	u32 ver = c->probed_ver;
	if (s->pr_func != func || s->pr_ver != ver) {
		s->pr_yes = probed.lookup(&func) != 0;
		s->pr_func = func;
		s->pr_ver = ver;
	}
	return s->pr_yes;
}

/* The whole accounting of one add, at task_work_add's entry. */
static __always_inline int add_entry(void *ctx, struct task_struct *task,
				     struct callback_head *work, u32 notify)
{
	u64 now = bpf_ktime_get_ns();
	struct tw_ctl *c = window(now);
	if (!c)
		return 0;
	u32 gen = c->gen;
	struct tstate *s = state_of(task);
	if (!s)
		return 0;
	if (!s->traced) {
		if (s->pid == TW_SELF_PID) /* top tells what it costs, this too */
			stat_inc(TW_ST_SELF);
		return 0;
	}
	u64 w = (u64)work, func = 0;
	/* Safe: the item cannot have run before it is queued. */
	bpf_probe_read_kernel(&func, sizeof(func), &work->func);
	int fail = add_will_fail(task);
	struct tw_agg *a = agg_of(gen, s, func);
	if (a) {
		a->cgroup = s->cgroup; /* a plain store: the cgroup of the latest add */
		__sync_fetch_and_add(&a->adds, 1);
		if ((notify & NOTIFY_MASK) < 32)
#ifdef TW_CAS
			__sync_fetch_and_or(&a->notify_mask, 1ULL << (notify & NOTIFY_MASK));
#else
			a->notify_mask |= 1ULL << (notify & NOTIFY_MASK); /* set once, in practice */
#endif
		if (fail)
			__sync_fetch_and_add(&a->failed_adds, 1);
	}
	u64 pt = bpf_get_current_pid_tgid();
	int self_add = (u32)pt == s->tid;
	/* The common case (a close queues ____fput on the closer) costs no
	 * pair entry: user space reads the pair from the aggregate. */
	if (self_add && a)
		__sync_fetch_and_add(&a->own_adds, 1);
	else
		count_pair(gen, s, func, pt);
	s32 stack_id = take_stack(ctx, gen, func);
	if (!fail) {
		struct tw_item it = {.ts = now, .func = func, .task = (u64)task, .tid = s->tid,
				     .gen = s->gen, .pid = s->pid};
		if (!is_probed(c, s, func, self_add))
			it.flags = TW_IT_UNPROBED;
		/* One insert when the work is not in flight yet (nearly always). */
		if (inflight.insert(&w, &it) != 0) {
			struct tw_item *old = inflight.lookup(&w);
			if (old)
				settle_unseen(ctx, gen, w, old, now);
			if (!old || inflight.update(&w, &it) != 0)
				stat_inc(TW_ST_FULL_INFLIGHT);
		}
		if (it.flags & TW_IT_UNPROBED)
			__sync_fetch_and_add(&s->unprobed, 1);
		else
			__sync_fetch_and_add(&s->depth, 1);
		/* Read after the add: a concurrent add on another CPU makes this
		 * the depth both reached, which is the maximum either way. */
		s64 d = *(volatile s64 *)&s->depth + *(volatile s64 *)&s->unprobed;
		if (a && d > 0)
			atomic_max(&a->max_depth, (u64)d);
	}
#ifdef TW_EVENTS
	struct tw_event ev = {.kind = TW_EV_ADD, .ts = now, .work = w, .func = func,
			      .tid = s->tid, .pid = s->pid, .gen = s->gen, .adder_tid = (u32)pt,
			      .adder_pid = pt >> 32, .ret = fail ? -TW_ESRCH : 0, .notify = notify,
			      .stack_id = stack_id, .cgroup = s->cgroup,
			      .adder_cgroup = bpf_get_current_cgroup_id()};
	__builtin_memcpy(ev.comm, s->comm, TW_COMM_LEN);
	bpf_get_current_comm(ev.adder_comm, sizeof(ev.adder_comm));
	emit(ctx, &ev);
#endif
	return 0;
}

/* ---- task_work_run ------------------------------------------------------ */

static __always_inline void cb_event(void *ctx, struct tstate *s, struct cb_call *cc,
				     u64 run, u32 flags)
{
#ifdef TW_EVENTS
	struct tw_event ev = {.kind = TW_EV_CALLBACK, .ts = cc->ts, .work = cc->work,
			      .func = cc->func, .queue_ns = cc->queue_ns, .dur_ns = run,
			      .tid = s->tid, .pid = s->pid, .gen = s->gen,
			      .flags = flags | (cc->matched ? TW_CB_MATCHED : 0)};
	__builtin_memcpy(ev.comm, s->comm, TW_COMM_LEN);
	emit(ctx, &ev);
#endif
}


static __always_inline int run_entry(void *ctx)
{
	u64 now = bpf_ktime_get_ns();
	if (!window(now))
		return 0;
	struct tstate *s = current_state();
	if (!s || !s->traced)
		return 0;
	u32 l = s->level;
	/* task_work_run nests only inside a callback.  With none running at the
	 * current level, earlier returns were missed (a return probe out of
	 * instances, or a call under way at attach): start over. */
	if (l > TW_MAX_NEST || (l > 0 && s->lv[TW_LV(l - 1)].cb_depth == 0)) {
		stat_inc(TW_ST_RESYNC);
		/* Callbacks left open on the dropped levels were counted at their
		 * start; their lines go out now, without a run time. */
#pragma unroll
		for (int i = 0; i < TW_MAX_NEST; i++) {
			if (i < l && s->lv[i].cb_depth > 0) {
				stat_inc(TW_ST_NORET);
				cb_event(ctx, s, &s->lv[i].cb, 0, TW_CB_NORUN);
				s->lv[i].cb_depth = 0;
			}
		}
		l = 0;
	}
	s->level = l + 1;
	if (l < TW_MAX_NEST) {
		struct run_level *lv = &s->lv[TW_LV(l)];
		lv->ts = now;
		lv->count = 0;
		lv->cb_depth = 0;
		/* Every item queued before this instant has run (or was
		 * cancelled) when this call returns.  Counted at the outermost
		 * level only: an inner run's snapshot holds the same items. */
		lv->unprobed = l == 0 ? s->unprobed : 0;
	}
	s->last_run_ts = now;
	return 0;
}

static __always_inline int run_return(void *ctx)
{
	u64 now = bpf_ktime_get_ns();
	if (!window(now))
		return 0;
	u64 key = bpf_get_current_task();
	struct tstate *s = tasks.lookup(&key);
	if (!s || s->level == 0)
		return 0;
	u32 l = s->level - 1;
	s->level = l;
	if (l < TW_MAX_NEST) {
		struct run_level *lv = &s->lv[TW_LV(l)];
		/* (a cancel between our entry and the run's detach may have
		 * taken one already) */
		s64 n = lv->unprobed < s->unprobed ? lv->unprobed : s->unprobed;
		if (n > 0)
			__sync_fetch_and_add(&s->unprobed, -n);
		if (lv->cb_depth > 0) { /* the callback's return was not reported */
			stat_inc(TW_ST_NORET);
			cb_event(ctx, s, &lv->cb, 0, TW_CB_NORUN);
			lv->cb_depth = 0;
		}
#ifdef TW_EVENTS
		if (lv->count) {
			struct tw_event ev = {.kind = TW_EV_RUN, .ts = lv->ts,
					      .dur_ns = now - lv->ts, .tid = s->tid,
					      .pid = s->pid, .gen = s->gen, .count = lv->count};
			__builtin_memcpy(ev.comm, s->comm, TW_COMM_LEN);
			emit(ctx, &ev);
		}
#endif
	}
	if (l == 0)
		s->last_run_end = now;
	return 0;
}

/* The level whose callbacks a probe on this thread belongs to, or NULL when
 * no tracked task_work_run is active (the function was called directly). */
static __always_inline struct run_level *current_level(struct tstate *s)
{
	if (s->level == 0 || s->level > TW_MAX_NEST)
		return 0;
	return &s->lv[TW_LV(s->level - 1)];
}

/* ---- callbacks ----------------------------------------------------------
 * Everything but the run time is counted at the callback's start, so a
 * return the kernel does not report costs only that run time. */

static __always_inline int cb_begin(void *ctx, u64 work)
{
	u64 now = bpf_ktime_get_ns();
	struct tw_ctl *c = window(now);
	if (!c)
		return 0;
	u64 key = bpf_get_current_task();
	struct tstate *s = tasks.lookup(&key);
	if (!s)
		return 0;
	struct run_level *lv = current_level(s);
	if (!lv)
		return 0;
	/* task_work_run calls callbacks one after another (a callback that runs
	 * task_work opens a level of its own), and only functions queued as
	 * task_work are probed: a callback still open at this level had its
	 * return go unreported (a return probe out of instances). */
	if (lv->cb_depth > 0) {
		stat_inc(TW_ST_NORET);
		cb_event(ctx, s, &lv->cb, 0, TW_CB_NORUN);
	}
	lv->cb_depth = 1;
	u32 gen = c->gen;
	struct cb_call cc = {.ts = now, .work = work};
	u64 queue_ns = 0;
	struct tw_item *it = inflight.lookup(&work);
	if (it) {
		cc.func = it->func;
		queue_ns = cc.ts - it->ts;
		cc.queue_ns = queue_ns;
		cc.matched = 1;
		/* An item added while its function was unprobed leaves the
		 * count of those when its run returns. */
		if (!(it->flags & TW_IT_UNPROBED))
			__sync_fetch_and_add(&s->depth, -1);
		inflight.delete(&work);
	} else {
		/* Still valid: the callback has not started. */
		bpf_probe_read_kernel(&cc.func, sizeof(cc.func), &((struct callback_head *)work)->func);
		stat_inc(TW_ST_UNMATCHED);
	}
	struct tw_agg *a = agg_of(gen, s, cc.func);
	if (a) {
		__sync_fetch_and_add(&a->callbacks, 1);
		if (lv->count == 0)
			__sync_fetch_and_add(&a->runs, 1);
		if (cc.matched) {
			__sync_fetch_and_add(&a->matched, 1);
			__sync_fetch_and_add(&a->timed, 1);
			__sync_fetch_and_add(&a->queue_sum, queue_ns);
			atomic_max(&a->queue_max, queue_ns);
		}
	}
	if (cc.matched)
		hist_add(gen, s, cc.func, TW_H_QUEUE, queue_ns);
	lv->count++;
	lv->cb = cc;
	return 0;
}

static __always_inline int cb_end(void *ctx)
{
	u64 now = bpf_ktime_get_ns();
	struct tw_ctl *c = window(now);
	u64 key = bpf_get_current_task();
	struct tstate *s = tasks.lookup(&key);
	if (!s)
		return 0;
	struct run_level *lv = current_level(s);
	if (!lv || lv->cb_depth == 0)
		return 0;
	lv->cb_depth = 0;
	if (!c) {
		/* Started (and counted) inside the window, ending after it closed:
		 * its line goes out without a run time, so lines and counts agree. */
		stat_inc(TW_ST_NORET);
		cb_event(ctx, s, &lv->cb, 0, TW_CB_NORUN);
		return 0;
	}
	struct cb_call cc = lv->cb;
	u64 run = now - cc.ts;
	u32 gen = c->gen;
	struct tw_agg *a = agg_of(gen, s, cc.func);
	if (a) {
		__sync_fetch_and_add(&a->run_cnt, 1);
		__sync_fetch_and_add(&a->run_sum, run);
		atomic_max(&a->run_max, run);
	}
	hist_add(gen, s, cc.func, TW_H_RUN, run);
	cb_event(ctx, s, &cc, run, 0);
	return 0;
}

/* ---- cancel variants ----------------------------------------------------
 * Which exist, and whether task_work_cancel returns the item or a bool, is
 * detected by user space.  Variants call each other: each call has its own
 * record on the thread's small stack, and only the outermost one counts. */

static __always_inline int cancel_entry(struct task_struct *task, u64 cb, u32 is_bool)
{
	if (!window(bpf_ktime_get_ns()))
		return 0;
	struct tstate *s = current_state();
	if (!s)
		return 0;
	u32 n = s->ncancel;
	if (n < TW_CANCEL_NEST) {
		struct cancel_call *cc = &s->cancel[TW_MASKED(n, TW_CANCEL_NEST)];
		cc->task = (u64)task;
		cc->cb = cb;
		cc->is_bool = is_bool;
	}
	s->ncancel = n + 1;
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
	u64 now = bpf_ktime_get_ns();
	struct tw_ctl *c = window(now);
	if (!c)
		return 0;
	u64 key = bpf_get_current_task();
	struct tstate *cs = tasks.lookup(&key);
	if (!cs || cs->ncancel == 0)
		return 0;
	u32 n = cs->ncancel - 1;
	cs->ncancel = n;
	if (n != 0 || n >= TW_CANCEL_NEST) /* an inner call: the outer one counts */
		return 0;
	struct cancel_call cc = cs->cancel[0];
	u64 ret = PT_REGS_RC(ctx);
	u64 work = cc.is_bool ? ((ret & 0xff) ? cc.cb : 0) : ret;
	if (!work)
		return 0;
	struct task_struct *task = (struct task_struct *)cc.task;
	struct tstate *s = state_of(task);
	if (!s || !s->traced)
		return 0;
	u64 func = 0;
	struct tw_item *it = inflight.lookup(&work);
	if (it) {
		func = it->func;
		int unprobed = it->flags & TW_IT_UNPROBED;
		inflight.delete(&work);
		if (unprobed)
			__sync_fetch_and_add(&s->unprobed, -1);
		else
			__sync_fetch_and_add(&s->depth, -1);
	} else {
		/* Unlinked, not run: still owned by the canceller. */
		bpf_probe_read_kernel(&func, sizeof(func), &((struct callback_head *)work)->func);
	}
	struct tw_agg *a = agg_of(c->gen, s, func);
	if (a) {
		__sync_fetch_and_add(&a->cancels, 1);
		if (it)
			__sync_fetch_and_add(&a->cancels_matched, 1);
	}
#ifdef TW_EVENTS
	struct tw_event ev = {.kind = TW_EV_CANCEL, .ts = now, .work = work,
			      .func = func, .tid = s->tid, .pid = s->pid, .gen = s->gen};
	__builtin_memcpy(ev.comm, s->comm, TW_COMM_LEN);
	emit(ctx, &ev);
#endif
	return 0;
}

/* ---- task lifecycle ----------------------------------------------------- */

/* The task_struct is being freed: nothing can queue on it or run as it
 * any more.  Its state goes; user space learns that (tid, gen) is gone. */
RAW_TRACEPOINT_PROBE(sched_process_free)
{
	struct task_struct *t = (struct task_struct *)ctx->args[0];
	u64 key = (u64)t;
	struct tstate *s = tasks.lookup(&key);
	if (s) {
		struct tw_retired rk = {.tid = s->tid, .gen = s->gen};
		struct tw_retired_val rv = {.depth = s->depth + s->unprobed,
					    .ts = bpf_ktime_get_ns()};
		if (retired.update(&rk, &rv) != 0)
			stat_inc(TW_ST_FULL_RETIRED);
		tasks.delete(&key);
	}
#ifdef TW_FOLLOW
	/* A followed process is gone once its leader is freed. */
	u32 tid = 0, pid = 0;
	bpf_probe_read_kernel(&tid, sizeof(tid), TASK_PID(t));
	bpf_probe_read_kernel(&pid, sizeof(pid), TASK_TGID(t));
	if (tid == pid)
		filter_pids.delete(&pid);
#endif
	return 0;
}

/* exec renames the task: later aggregates carry the new name.  A process
 * started into a cgroup (written to cgroup.procs, then exec) is seen in it
 * from here on, whatever its state said before. */
RAW_TRACEPOINT_PROBE(sched_process_exec)
{
	u64 key = bpf_get_current_task();
	struct tstate *s = tasks.lookup(&key);
	if (s) {
		bpf_get_current_comm(s->comm, sizeof(s->comm));
		s->cgroup = bpf_get_current_cgroup_id();
		s->traced = traced_now(s);
	}
	return 0;
}

/* A task moved to another cgroup (for a whole process, only its leader is
 * reported; its other threads catch up at their next interval's aggregate,
 * but their filter verdict stays that of their creation). */
RAW_TRACEPOINT_PROBE(cgroup_attach_task)
{
	u64 key = (u64)ctx->args[2]; /* (dst_cgrp, path, task, threadgroup) */
	struct tstate *s = tasks.lookup(&key);
	if (s) {
		s->cgroup = cgroup_of((struct task_struct *)key);
		s->traced = traced_now(s);
	}
	return 0;
}

#ifdef TW_CGROUP_FILTER
/* A cgroup made under a filtered one is filtered too, from its creation:
 * before any task can be moved into it. */
RAW_TRACEPOINT_PROBE(cgroup_mkdir)
{
	struct cgroup *cg = (struct cgroup *)ctx->args[0];
	struct cgroup_subsys_state *pcss = 0;
	struct cgroup *parent = 0;
	struct kernfs_node *kn = 0;
	u64 id = 0, pid = 0;
	bpf_probe_read_kernel(&pcss, sizeof(pcss), CGROUP_PARENT_CSS(cg));
	if (!pcss)
		return 0;
	bpf_probe_read_kernel(&parent, sizeof(parent), CSS_CGROUP(pcss));
	if (!parent)
		return 0;
	bpf_probe_read_kernel(&kn, sizeof(kn), CGROUP_KN(parent));
	bpf_probe_read_kernel(&pid, sizeof(pid), KERNFS_ID(kn));
	if (!filter_cgroups.lookup(&pid))
		return 0;
	bpf_probe_read_kernel(&kn, sizeof(kn), CGROUP_KN(cg));
	bpf_probe_read_kernel(&id, sizeof(id), KERNFS_ID(kn));
	u8 one = 1;
	if (filter_cgroups.update(&id, &one) != 0)
		stat_inc(TW_ST_FULL_CGROUPS);
	return 0;
}
#endif

/* ---- following a command's process tree --------------------------------- */

#ifdef TW_FOLLOW
/* Threads of twtrace that start a traced command: their children are traced
 * from before they first run, while they themselves are not. */
BPF_HASH(spawners, u32, u8, 16);

RAW_TRACEPOINT_PROBE(sched_process_fork)
{
	struct task_struct *parent = (struct task_struct *)ctx->args[0];
	struct task_struct *child = (struct task_struct *)ctx->args[1];
	u32 ptid = 0, ppid = 0, ctid = 0, cpid = 0;
	bpf_probe_read_kernel(&ptid, sizeof(ptid), TASK_PID(parent));
	bpf_probe_read_kernel(&ppid, sizeof(ppid), TASK_TGID(parent));
	bpf_probe_read_kernel(&ctid, sizeof(ctid), TASK_PID(child));
	bpf_probe_read_kernel(&cpid, sizeof(cpid), TASK_TGID(child));
	/* A new thread joins a process that is already followed (or not). */
	if (ctid != cpid)
		return 0;
	u8 one = 1;
	/* This runs before the child is first woken, so nothing it queues is
	 * missed. */
	if (filter_pids.lookup(&ppid) || filter_tids.lookup(&ptid) || spawners.lookup(&ptid)) {
		if (filter_pids.update(&cpid, &one) != 0)
			stat_inc(TW_ST_FULL_FILTER);
	}
	return 0;
}
#endif

/* ---- attachment --------------------------------------------------------- */

#ifdef TW_FENTRY
KFUNC_PROBE(task_work_add, struct task_struct *task, struct callback_head *work, int notify)
{
	return add_entry(ctx, task, work, (u32)notify);
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
	return run_entry(ctx);
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

int run_kprobe(struct pt_regs *ctx)
{
	return run_entry(ctx);
}

int run_kretprobe(struct pt_regs *ctx)
{
	return run_return(ctx);
}
#endif

/* Callbacks probed with kprobes (any function, attached at any time). */
int cb_entry(struct pt_regs *ctx)
{
	return cb_begin(ctx, PT_REGS_PARM1(ctx));
}

int cb_return(struct pt_regs *ctx)
{
	return cb_end(ctx);
}

/* Callbacks known before tracing starts, probed with fentry/fexit where the
 * kernel and bcc have them: TW_CB_FENTRY expands to TW_CB(func) lines. */
#ifdef TW_CB_FENTRY
#define TW_CB(fn)                                                   \
	KFUNC_PROBE(fn, struct callback_head *work)                 \
	{                                                           \
		return cb_begin(ctx, (u64)work);                         \
	}                                                           \
	KRETFUNC_PROBE(fn, struct callback_head *work)              \
	{                                                           \
		return cb_end(ctx);                                 \
	}
TW_CB_FENTRY
#endif
