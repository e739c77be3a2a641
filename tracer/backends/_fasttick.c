/* The sampler's steady-state tick, in C (optional: circuit runs without it).
 *
 * Why: after each sleep between samples, caches and TLBs hold other work's
 * data, and an interpreter touches much memory per step: the Python tick
 * costs several times the same /proc reads made from C (docs/performance.md,
 * "What limits the sampler").  This module does the common tick of a
 * process, and only that:
 *
 *   - no thread ran since the last sample: the previous rows again;
 *   - the threads that ran are running now (state R), or asleep again in a
 *     syscall, on a first argument, where they slept before (a thread
 *     waiting for the GIL after its turn, a worker back on its queue), with
 *     no new or gone thread: their rows from `stat` (+ `syscall` when
 *     asleep, + `status` when its context switches are due), the process
 *     row from the thread's or the process's `stat` (+ `statm`, `io` every
 *     SLOW_COUNTER_NS), as ProcBackend.sample does.
 *
 * Anything else (a thread asleep somewhere new, which needs its wait
 * channel and a classification; a new thread; an exit; an fd scan, count or
 * maps read that is due; a read error) sends the process back to the Python
 * path for this tick, which is the reference: tests/integration/test_fasttick.py checks
 * both give the same rows.  Python reloads the process here after its own
 * sample.  The loop around the ticks (burst) is at the end.
 *
 * tracer/backends/fasttick.py is the Python side: what it loads here comes
 * from ProcBackend's state, and the rows built here are the schema's
 * (ThreadRow, ProcessRow): this file names the fields it fills, and is told
 * at init where each goes, so it holds no column index of its own.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SCHED_MAX 128
#define READ_MAX 4096

/* The fields of the rows this module builds, by the schema's names (the
 * module's THREAD_FIELDS, PROCESS_FIELDS, GIL_FIELDS); FastTick() is given
 * the place of each in its row. */
enum {
    T_PID, T_TID, T_NAME, T_STATE, T_WAIT, T_SYSCALL, T_ARG0, T_WCHAN, T_USER_NS, T_SYSTEM_NS,
    T_CPU_NS, T_RUN_DELAY_NS, T_CTX_VOL, T_CTX_INVOL, T_CPU, T_COUNT
};
static const char *const THREAD_NAMES[T_COUNT] = {
    "pid",     "tid",       "name",   "state",        "wait",    "syscall",   "arg0", "wchan",
    "user_ns", "system_ns", "cpu_ns", "run_delay_ns", "ctx_vol", "ctx_invol", "cpu"};
enum {
    P_PID, P_PPID, P_NUM_THREADS, P_RSS_BYTES, P_USER_NS, P_SYSTEM_NS, P_READ_CHARS,
    P_WRITE_CHARS, P_READ_BYTES, P_WRITE_BYTES, P_CHILDREN_USER_NS, P_CHILDREN_SYSTEM_NS, P_COUNT
};
static const char *const PROCESS_NAMES[P_COUNT] = {
    "pid",        "ppid",        "num_threads", "rss_bytes",  "user_ns",
    "system_ns",  "read_chars",  "write_chars", "read_bytes", "write_bytes",
    "children_user_ns", "children_system_ns"};
enum { G_T_NS, G_PID, G_LOCKED, G_HOLDER, G_SWITCHES, G_COUNT };
static const char *const GIL_NAMES[G_COUNT] = {"t_ns", "pid", "locked", "holder", "switches"};

typedef struct {
    long tid;
    int sched_fd, stat_fd, status_fd, sys_fd, wchan_fd;
    char sched[SCHED_MAX];
    Py_ssize_t sched_len;
    PyObject *row;   /* the last row (a ThreadRow), owned */
    PyObject *slept; /* its last rows asleep (ThreadState.slept: a tuple of rows), owned */
    long long pcount, status_ns;
    /* scratch for the tick under way */
    char nsched[SCHED_MAX];
    Py_ssize_t nsched_len;
    PyObject *nrow;
    PyObject *nslept; /* its slept rows after this tick, when a new wait changed them */
    long long npcount, nstatus_ns;
    int check; /* did not run, asleep in its last row, CPUs saturated: read it again */
} Thr;

typedef struct {
    long pid;
    int fd_stat, fd_statm, fd_io, fd_dir;
    Py_ssize_t nthr;
    Thr *thr;
    PyObject *prow;   /* a ProcessRow, owned */
    PyObject *rows;   /* list, owned */
    PyObject *counts; /* tuple, owned */
    PyObject *kinds;  /* the fd table's kinds (FdTable.kinds: fd -> kind), owned, or NULL */
    int scan_due;     /* this tick found an fd look due: the Python path does it after */
    long long slow_ns, rss, io[4];
    long skips;
    long idle_back, idle_run; /* hand back after idle_back samples in a row where none ran (0: never) */
    /* The fd schedule (tracer/fdscan.py, FdSchedule): its fields, its rule. */
    int dirty, counted;
    long long nfds, scan_at, count_at;
    long long python_at; /* the Python path has work due then (0: none) */
    /* The interpreter's GIL state (tracer/gilstate.py): /proc/PID/mem, the
     * struct's address, native_thread_id's offset in PyThreadState (gil_fd
     * -1: not read); the last values read, and the holder pointer they
     * resolved, so an idle process and an unchanged holder cost no read. */
    int gil_fd, gil_have;
    long long gil_addr, gil_tid_off, gil_pthread_off, gil_ptr, gil_sw;
    long gil_locked, gil_tid, gil_left;
} Proc;

typedef struct {
    PyObject_HEAD
    Proc *procs;
    Py_ssize_t nprocs;
    long long tick_ns, page, slow_ns, idle_refresh, check_min_ns, probe_max;
    PyTypeObject *thread_type, *process_type; /* the schema's rows: ThreadRow, ProcessRow */
    Py_ssize_t tx[T_COUNT], px[P_COUNT], gx[G_COUNT]; /* where each field goes in its row */
    int loadavg_fd; /* /proc/loadavg: its runnable count says when CPUs are saturated */
    long long ncpu;
    PyObject *running, *state_r, *empty;
    PyObject *classify; /* the backend's wait classifier (tracer/waits.py), or NULL */
    int sigfd; /* burst(): readable when one of sigmask is pending */
    sigset_t sigmask;
    /* The sink's lists (bind): processes rows, (t_ns, thread rows) batches, gil rows. */
    PyObject *pbuf, *tbuf, *gbuf;
} FastTick;

/* ---------------------------------------------------------------- parsing */

typedef struct {
    char state;
    long long ppid, utime, stime, cutime, cstime, num_threads, processor;
    const char *comm;
    Py_ssize_t comm_len;
} Stat;

/* /proc/.../stat: the comm ends at the last ')' (it may contain ") S 1 ("). */
static int parse_stat(const char *buf, Py_ssize_t n, Stat *st) {
    const char *lp = memchr(buf, '(', n);
    const char *rp = NULL;
    for (const char *q = buf + n - 1; q > buf; q--)
        if (*q == ')') { rp = q; break; }
    if (!lp || !rp || rp < lp || rp + 2 >= buf + n) return -1;
    st->comm = lp + 1;
    st->comm_len = rp - lp - 1;
    const char *p = rp + 2, *end = buf + n;
    /* f[0] state, f[1] ppid, f[11] utime, f[12] stime, f[13] cutime, f[14] cstime,
     * f[17] num_threads, f[36] processor */
    long long vals[37];
    int field = 0;
    st->state = *p;
    st->processor = -1;
    while (p < end && field < 37) {
        while (p < end && (*p == ' ' || *p == '\n')) p++;
        if (p >= end) break;
        if (field == 0) {
            vals[0] = 0;
            while (p < end && *p != ' ' && *p != '\n') p++;
        } else {
            int neg = 0;
            long long v = 0;
            if (*p == '-') { neg = 1; p++; }
            while (p < end && *p >= '0' && *p <= '9') v = v * 10 + (*p++ - '0');
            if (p < end && *p != ' ' && *p != '\n') return -1;
            vals[field] = neg ? -v : v;
        }
        field++;
    }
    if (field < 18) return -1;
    st->ppid = vals[1];
    st->utime = vals[11];
    st->stime = vals[12];
    st->cutime = vals[13];
    st->cstime = vals[14];
    st->num_threads = vals[17];
    if (field > 36) st->processor = vals[36];
    return 0;
}

static int parse_ints(const char *buf, Py_ssize_t n, long long *out, int want) {
    const char *p = buf, *end = buf + n;
    int k = 0;
    while (k < want) {
        while (p < end && (*p == ' ' || *p == '\n')) p++;
        if (p >= end || *p < '0' || *p > '9') return -1;
        long long v = 0;
        while (p < end && *p >= '0' && *p <= '9') v = v * 10 + (*p++ - '0');
        out[k++] = v;
    }
    return 0;
}

/* The number after "\n<key>" (key includes the ':'), or -1. */
static long long field_after(const char *buf, Py_ssize_t n, const char *key) {
    size_t kl = strlen(key);
    const char *p = buf, *end = buf + n;
    while (p < end) {
        const char *nl = memchr(p, '\n', end - p);
        if (!nl) return -1;
        if ((size_t)(end - nl - 1) >= kl && memcmp(nl + 1, key, kl) == 0) {
            const char *q = nl + 1 + kl;
            while (q < end && (*q == ' ' || *q == '\t')) q++;
            long long v = 0;
            while (q < end && *q >= '0' && *q <= '9') v = v * 10 + (*q++ - '0');
            return v;
        }
        p = nl + 1;
    }
    return -1;
}

/* /proc/PID/io has no leading newline before its first key. */
static long long io_field(const char *buf, Py_ssize_t n, const char *key) {
    size_t kl = strlen(key);
    if ((size_t)n > kl && memcmp(buf, key, kl) == 0) {
        const char *q = buf + kl, *end = buf + n;
        while (q < end && *q == ' ') q++;
        long long v = 0;
        while (q < end && *q >= '0' && *q <= '9') v = v * 10 + (*q++ - '0');
        return v;
    }
    long long v = field_after(buf, n, key);
    return v < 0 ? 0 : v;
}

static Py_ssize_t rd(int fd, char *buf, size_t size) {
    if (fd < 0) return -1;
    ssize_t n = pread(fd, buf, size, 0);
    return n <= 0 ? -1 : (Py_ssize_t)n;
}

/* ----------------------------------------------------------------- object */

static void clear_proc(Proc *p) {
    for (Py_ssize_t i = 0; i < p->nthr; i++) {
        Py_CLEAR(p->thr[i].row);
        Py_CLEAR(p->thr[i].slept);
        Py_CLEAR(p->thr[i].nrow);
        Py_CLEAR(p->thr[i].nslept);
    }
    PyMem_Free(p->thr);
    p->thr = NULL;
    p->nthr = 0;
    Py_CLEAR(p->prow);
    Py_CLEAR(p->rows);
    Py_CLEAR(p->counts);
    Py_CLEAR(p->kinds);
}

static Proc *find(FastTick *self, long pid) {
    for (Py_ssize_t i = 0; i < self->nprocs; i++)
        if (self->procs[i].pid == pid) return &self->procs[i];
    return NULL;
}

static void drop_pid(FastTick *self, long pid) {
    for (Py_ssize_t i = 0; i < self->nprocs; i++) {
        if (self->procs[i].pid == pid) {
            clear_proc(&self->procs[i]);
            self->procs[i] = self->procs[self->nprocs - 1];
            self->nprocs--;
            return;
        }
    }
}

static void FastTick_dealloc(FastTick *self) {
    for (Py_ssize_t i = 0; i < self->nprocs; i++) clear_proc(&self->procs[i]);
    PyMem_Free(self->procs);
    Py_XDECREF(self->running);
    Py_XDECREF(self->pbuf);
    Py_XDECREF(self->tbuf);
    Py_XDECREF(self->gbuf);
    Py_XDECREF(self->thread_type);
    Py_XDECREF(self->process_type);
    Py_XDECREF(self->state_r);
    Py_XDECREF(self->empty);
    Py_XDECREF(self->classify);
    if (self->sigfd >= 0) close(self->sigfd);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *FastTick_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    FastTick *self = (FastTick *)PyType_GenericNew(type, args, kw);
    if (self) self->sigfd = -1; /* (0 is an fd) */
    return (PyObject *)self;
}

/* Where each of the n fields goes in its row: `places`, n distinct indices
 * below n (every field of the row is filled). */
static int read_places(PyObject *places, Py_ssize_t *out, Py_ssize_t n, const char *what) {
    if (!PyTuple_Check(places) || PyTuple_GET_SIZE(places) != n) {
        PyErr_Format(PyExc_ValueError, "%s: %zd places expected", what, n);
        return -1;
    }
    unsigned long long seen = 0; /* (n <= 64) */
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t v = PyLong_AsSsize_t(PyTuple_GET_ITEM(places, i));
        if (v == -1 && PyErr_Occurred()) return -1;
        if (v < 0 || v >= n || (seen >> v & 1)) {
            PyErr_Format(PyExc_ValueError, "%s: places must be 0..%zd, once each", what, n - 1);
            return -1;
        }
        seen |= 1ULL << v;
        out[i] = v;
    }
    return 0;
}

/* FastTick(tick_ns, page, slow_ns, idle_refresh, check_min_ns, running, probe_max,
 *          (ThreadRow, ProcessRow), (thread places, process places, gil places),
 *          loadavg_fd=-1, ncpu=0, classify=None)
 * classify(state, syscall, arg0, wchan, fd kind or None) -> wait: a thread
 * asleep somewhere new gets its wait from it (without it, the Python path
 * takes such a process).
 * places: for each field of THREAD_FIELDS (PROCESS_FIELDS, GIL_FIELDS), in
 * that order, its index in a ThreadRow (a ProcessRow, a gil table row). */
static int FastTick_init(FastTick *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"tick_ns",   "page",   "slow_ns",    "idle_refresh",
                             "check_min_ns", "running", "probe_max", "rows",
                             "places",    "loadavg_fd", "ncpu",   "classify", NULL};
    PyObject *running, *rows, *places, *classify = Py_None;
    PyTypeObject *tt, *pt;
    PyObject *tp, *pp, *gp;
    self->loadavg_fd = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "LLLLLULO!O!|iLO", kwlist, &self->tick_ns,
                                     &self->page, &self->slow_ns, &self->idle_refresh,
                                     &self->check_min_ns, &running, &self->probe_max,
                                     &PyTuple_Type, &rows, &PyTuple_Type, &places,
                                     &self->loadavg_fd, &self->ncpu, &classify))
        return -1;
    if (classify != Py_None && !PyCallable_Check(classify)) {
        PyErr_SetString(PyExc_TypeError, "classify must be callable");
        return -1;
    }
    Py_XSETREF(self->classify, classify == Py_None ? NULL : Py_NewRef(classify));
    if (!PyArg_ParseTuple(rows, "O!O!", &PyType_Type, &tt, &PyType_Type, &pt) ||
        !PyArg_ParseTuple(places, "OOO", &tp, &pp, &gp))
        return -1;
    if (!PyType_IsSubtype(tt, &PyTuple_Type) || !PyType_IsSubtype(pt, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "rows: two tuple types");
        return -1;
    }
    if (read_places(tp, self->tx, T_COUNT, "thread") < 0 ||
        read_places(pp, self->px, P_COUNT, "process") < 0 ||
        read_places(gp, self->gx, G_COUNT, "gil") < 0)
        return -1;
    Py_XSETREF(self->thread_type, (PyTypeObject *)Py_NewRef(tt));
    Py_XSETREF(self->process_type, (PyTypeObject *)Py_NewRef(pt));
    Py_XSETREF(self->running, Py_NewRef(running));
    Py_XSETREF(self->state_r, PyUnicode_InternFromString("R"));
    Py_XSETREF(self->empty, PyUnicode_InternFromString(""));
    return self->state_r && self->empty ? 0 : -1;
}

/* load(pid, (fd_stat, fd_statm, fd_io, fd_dir), threads, prow, rows,
 *      (rchar, wchar, read_bytes, write_bytes), (slow_ns, rss, skips, idle_back),
 *      counts, (dirty, counted, nfds, scan_at, count_at), python_at, gil, kinds)
 * threads: [(tid, sched_fd, stat_fd, status_fd, syscall_fd, wchan_fd, schedstat bytes, row,
 *            slept rows, pcount, status_ns)], in the order of ``rows`` (an fd
 * -1: not open; a thread needing it goes to the Python path); kinds: the fd
 * table's {fd: kind} (read, not copied), or None; the fifth tuple is
 * FdSchedule.for_c(); gil: None, or (/proc/PID/mem fd, the GIL's address,
 * native_thread_id's offset, the tid's offset in a pthread or -1). */
static PyObject *FastTick_load(FastTick *self, PyObject *args) {
    long pid;
    int fds[4], dirty, counted;
    PyObject *threads, *prow, *rows, *counts, *gil, *kinds;
    long long v[4], io[4], nfds, scan_at, count_at, python_at;
    int gil_fd = -1;
    long long gil_addr = 0, gil_tid_off = 0, gil_pthread_off = -1;
    if (!self->thread_type) {
        PyErr_SetString(PyExc_RuntimeError, "FastTick not initialised");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "l(iiii)O!O!O!(LLLL)(LLLL)O!(ppLLL)LOO", &pid, &fds[0], &fds[1],
                          &fds[2], &fds[3], &PyList_Type, &threads, &PyTuple_Type, &prow,
                          &PyList_Type, &rows, &io[0], &io[1], &io[2], &io[3], &v[0], &v[1],
                          &v[2], &v[3], &PyTuple_Type, &counts, &dirty, &counted, &nfds,
                          &scan_at, &count_at, &python_at, &gil, &kinds))
        return NULL;
    if (kinds != Py_None && !PyDict_Check(kinds)) {
        PyErr_SetString(PyExc_TypeError, "kinds must be a dict or None");
        return NULL;
    }
    if (gil != Py_None &&
        !PyArg_ParseTuple(gil, "iLLL", &gil_fd, &gil_addr, &gil_tid_off, &gil_pthread_off))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(threads);
    if (n != PyList_GET_SIZE(rows) || PyTuple_GET_SIZE(prow) != P_COUNT) {
        PyErr_SetString(PyExc_ValueError, "threads and rows do not line up");
        return NULL;
    }
    Thr *thr = PyMem_Calloc(n ? n : 1, sizeof(Thr));
    if (!thr) return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        const char *sched;
        Py_ssize_t slen;
        PyObject *row, *slept;
        Thr *t = &thr[i];
        int bad = !PyArg_ParseTuple(PyList_GET_ITEM(threads, i), "liiiiiy#O!O!LL", &t->tid,
                                    &t->sched_fd, &t->stat_fd, &t->status_fd, &t->sys_fd,
                                    &t->wchan_fd, &sched,
                                    &slen, &PyTuple_Type, &row, &PyTuple_Type, &slept,
                                    &t->pcount, &t->status_ns);
        bad = bad || PyTuple_GET_SIZE(row) != T_COUNT;
        for (Py_ssize_t k = 0; !bad && k < PyTuple_GET_SIZE(slept); k++) {
            PyObject *r = PyTuple_GET_ITEM(slept, k);
            bad = !PyTuple_Check(r) || PyTuple_GET_SIZE(r) != T_COUNT;
        }
        if (bad) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "rows of another length");
            for (Py_ssize_t j = 0; j < i; j++) {
                Py_CLEAR(thr[j].row);
                Py_CLEAR(thr[j].slept);
            }
            PyMem_Free(thr);
            return NULL;
        }
        if (slen > SCHED_MAX) slen = SCHED_MAX;
        memcpy(t->sched, sched, slen);
        t->sched_len = slen;
        t->row = Py_NewRef(row);
        t->slept = Py_NewRef(slept);
    }
    Proc *p = find(self, pid);
    if (p) {
        clear_proc(p);
    } else {
        Proc *more = PyMem_Realloc(self->procs, (self->nprocs + 1) * sizeof(Proc));
        if (!more) {
            for (Py_ssize_t j = 0; j < n; j++) {
                Py_CLEAR(thr[j].row);
                Py_CLEAR(thr[j].slept);
            }
            PyMem_Free(thr);
            return PyErr_NoMemory();
        }
        self->procs = more;
        p = &self->procs[self->nprocs++];
    }
    memset(p, 0, sizeof(Proc));
    p->pid = pid;
    p->fd_stat = fds[0];
    p->fd_statm = fds[1];
    p->fd_io = fds[2];
    p->fd_dir = fds[3];
    p->thr = thr;
    p->nthr = n;
    p->prow = Py_NewRef(prow);
    p->rows = Py_NewRef(rows);
    p->counts = Py_NewRef(counts);
    p->kinds = kinds == Py_None ? NULL : Py_NewRef(kinds);
    memcpy(p->io, io, sizeof io);
    p->slow_ns = v[0];
    p->rss = v[1];
    p->skips = (long)v[2];
    p->idle_back = (long)v[3];
    p->dirty = dirty;
    p->counted = counted;
    p->nfds = nfds;
    p->scan_at = scan_at;
    p->count_at = count_at;
    p->python_at = python_at;
    p->gil_fd = gil_fd;
    p->gil_addr = gil_addr;
    p->gil_tid_off = gil_tid_off;
    p->gil_pthread_off = gil_pthread_off;
    Py_RETURN_NONE;
}

/* Field f of a thread row (borrowed). */
#define TFIELD(self, row, f) PyTuple_GET_ITEM((row), (self)->tx[f])

/* Whether a row (any of `rows`, a list or tuple) is asleep in a syscall of
 * `fd_io` on an fd of `fds` (sets of ints); -1 with a Python error. */
static int on_fds(FastTick *self, PyObject *rows, PyObject *fd_io, PyObject *fds) {
    Py_ssize_t n = PySequence_Fast_GET_SIZE(rows);
    PyObject **items = PySequence_Fast_ITEMS(rows);
    for (Py_ssize_t i = 0; i < n; i++) {
        int r = PySet_Contains(fd_io, TFIELD(self, items[i], T_SYSCALL));
        if (r > 0) r = PySet_Contains(fds, TFIELD(self, items[i], T_ARG0));
        if (r) return r;
    }
    return 0;
}

/* looked(pid, counts, (dirty, counted, nfds, scan_at, count_at), fd_io, changed) -> bool
 * After the fd look the tick asked for (`scan`): the process's new fd counts
 * and schedule (FdSchedule.for_c()), unless a thread's row or slept row is
 * asleep in a syscall of `fd_io` on one of the fds the look found `changed`
 * (its wait may name that fd's kind: ProcBackend.reclassify must see it, on
 * a reload).  True if taken; False (nothing changed here) if a reload must. */
static PyObject *FastTick_looked(FastTick *self, PyObject *args) {
    long pid;
    PyObject *counts, *fd_io, *changed;
    int dirty, counted;
    long long nfds, scan_at, count_at;
    if (!PyArg_ParseTuple(args, "lO!(ppLLL)O!O!", &pid, &PyTuple_Type, &counts, &dirty, &counted,
                          &nfds, &scan_at, &count_at, &PySet_Type, &fd_io, &PySet_Type, &changed))
        return NULL;
    Proc *p = find(self, pid);
    if (!p) Py_RETURN_FALSE;
    if (PySet_GET_SIZE(changed) && PySet_GET_SIZE(fd_io)) {
        int r = on_fds(self, p->rows, fd_io, changed);
        for (Py_ssize_t i = 0; !r && i < p->nthr; i++)
            if (p->thr[i].slept) r = on_fds(self, p->thr[i].slept, fd_io, changed);
        if (r < 0) return NULL;
        if (r) Py_RETURN_FALSE;
    }
    Py_SETREF(p->counts, Py_NewRef(counts));
    p->dirty = dirty;
    p->counted = counted;
    p->nfds = nfds;
    p->scan_at = scan_at;
    p->count_at = count_at;
    Py_RETURN_TRUE;
}

static PyObject *FastTick_drop(FastTick *self, PyObject *arg) {
    long pid = PyLong_AsLong(arg);
    if (pid == -1 && PyErr_Occurred()) return NULL;
    drop_pid(self, pid);
    Py_RETURN_NONE;
}

static PyObject *ll(long long v) { return PyLong_FromLongLong(v); }

/* A row of `type` (a tuple type) with vals[f] at place[f], for f < n.
 * Steals the values, ints and strs, any of which may be NULL (then: NULL,
 * an error set).  Such a row can hold no cycle: it is not tracked by the
 * garbage collector, which untracks plain tuples of ints and strs by
 * itself but not a tuple subclass (the schema's rows), and would walk
 * every row kept until the next flush at each collection. */
static PyObject *make_row(PyTypeObject *type, const Py_ssize_t *place, PyObject **vals, int n) {
    PyObject *row = NULL;
    for (int f = 0; f < n; f++)
        if (!vals[f]) goto fail;
    row = type == &PyTuple_Type ? PyTuple_New(n) : type->tp_alloc(type, n);
    if (!row) goto fail;
    for (int f = 0; f < n; f++) PyTuple_SET_ITEM(row, place[f], vals[f]);
    PyObject_GC_UnTrack(row);
    return row;
fail:
    for (int f = 0; f < n; f++) Py_XDECREF(vals[f]);
    return NULL;
}


/* The fields of a row asleep: state, wait, syscall, arg0, wchan. */
enum { W_STATE, W_WAIT, W_SYSCALL, W_ARG0, W_WCHAN, W_COUNT };

/* A thread row, as ProcBackend._thread_row builds it: running; or (`like`:
 * its last row asleep) back asleep where it slept last, whose state, wait,
 * syscall, argument and wait channel it keeps; or asleep somewhere new, with
 * the fields `w` (new references, stolen: cleared whatever happens). */
static PyObject *thread_row(FastTick *self, Proc *p, Thr *t, const Stat *st, long long cpu_ns,
                            long long delay_ns, long long vol, long long invol, PyObject *like,
                            PyObject **w) {
    PyObject *comm;
    PyObject *old = TFIELD(self, t->row, T_NAME);
    /* The name rarely changes: reuse the last string when the bytes match
     * (its UTF-8 form is cached in the str after the first time). */
    Py_ssize_t ulen = -1;
    const char *u = PyUnicode_Check(old) ? PyUnicode_AsUTF8AndSize(old, &ulen) : NULL;
    if (u && ulen == st->comm_len && memcmp(u, st->comm, ulen) == 0) {
        comm = Py_NewRef(old);
    } else {
        PyErr_Clear();
        comm = PyUnicode_DecodeUTF8(st->comm, st->comm_len, "backslashreplace");
    }
    if (!comm) {
        for (int i = 0; w && i < W_COUNT; i++) Py_CLEAR(w[i]);
        return NULL;
    }
    PyObject *v[T_COUNT];
    v[T_PID] = PyLong_FromLong(p->pid);
    v[T_TID] = PyLong_FromLong(t->tid);
    v[T_NAME] = comm;
    if (like) {
        v[T_STATE] = Py_NewRef(TFIELD(self, like, T_STATE));
        v[T_WAIT] = Py_NewRef(TFIELD(self, like, T_WAIT));
        v[T_SYSCALL] = Py_NewRef(TFIELD(self, like, T_SYSCALL));
        v[T_ARG0] = Py_NewRef(TFIELD(self, like, T_ARG0));
        v[T_WCHAN] = Py_NewRef(TFIELD(self, like, T_WCHAN));
    } else if (w) {
        v[T_STATE] = w[W_STATE];
        v[T_WAIT] = w[W_WAIT];
        v[T_SYSCALL] = w[W_SYSCALL];
        v[T_ARG0] = w[W_ARG0];
        v[T_WCHAN] = w[W_WCHAN];
        for (int i = 0; i < W_COUNT; i++) w[i] = NULL;
    } else {
        v[T_STATE] = Py_NewRef(self->state_r);
        v[T_WAIT] = Py_NewRef(self->running);
        v[T_SYSCALL] = PyLong_FromLong(-1);
        v[T_ARG0] = PyLong_FromLong(0);
        v[T_WCHAN] = Py_NewRef(self->empty);
    }
    v[T_USER_NS] = ll(st->utime * self->tick_ns);
    v[T_SYSTEM_NS] = ll(st->stime * self->tick_ns);
    v[T_CPU_NS] = ll(cpu_ns);
    v[T_RUN_DELAY_NS] = ll(delay_ns);
    v[T_CTX_VOL] = ll(vol);
    v[T_CTX_INVOL] = ll(invol);
    v[T_CPU] = ll(st->processor);
    return make_row(self->thread_type, self->tx, v, T_COUNT);
}

/* /proc/TID/syscall: "nr arg0 ..." (arg0 in hex), as procfs.parse_syscall;
 * -1 when running or outside a syscall (the Python path sorts those out). */
static int parse_syscall(const char *buf, Py_ssize_t n, long long *nr, long long *arg0) {
    Py_ssize_t i = 0;
    long long v = 0;
    if (n <= 0 || buf[0] < '0' || buf[0] > '9') return -1;
    for (; i < n && buf[i] >= '0' && buf[i] <= '9'; i++) v = v * 10 + (buf[i] - '0');
    if (i >= n || buf[i] != ' ' || i + 2 >= n || buf[i + 1] != '0' || buf[i + 2] != 'x') return -1;
    unsigned long long a = 0;
    int digits = 0;
    for (i += 3; i < n && digits < 16; i++, digits++) {
        char c = buf[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) break;
        a = a << 4 | (unsigned)d;
    }
    if (!digits || (i < n && buf[i] != ' ' && buf[i] != '\n')) return -1;
    *nr = v;
    *arg0 = (long long)a; /* (two's complement, as parse_syscall keeps it in int64) */
    return 0;
}

/* /proc/TID/syscall read once for a thread not running: SYS_OK (nr and
 * arg0 set), SYS_RUNNING (the file says "running": the thread woke after its
 * stat was read), SYS_OUTSIDE ("-1 ...": blocked outside a syscall; nr -1,
 * arg0 0, as procfs.parse_syscall), SYS_NONE (no syscall file: not
 * readable here, the wait channel alone tells; nr -1, arg0 0), SYS_UNREAD
 * (a read that failed, or text this does not parse: the Python path must
 * look). */
enum { SYS_OK, SYS_RUNNING, SYS_OUTSIDE, SYS_NONE, SYS_UNREAD };

static int read_syscall(Thr *t, long long *nr, long long *arg0) {
    char buf[256];
    *nr = -1;
    *arg0 = 0;
    if (t->sys_fd < 0) return SYS_NONE;
    Py_ssize_t n = rd(t->sys_fd, buf, sizeof buf);
    if (n < 0) return SYS_UNREAD;
    if (parse_syscall(buf, n, nr, arg0) == 0) return SYS_OK;
    *nr = -1;
    *arg0 = 0;
    if (n >= 7 && memcmp(buf, "running", 7) == 0) return SYS_RUNNING;
    return n >= 2 && buf[0] == '-' ? SYS_OUTSIDE : SYS_UNREAD;
}

/* The last row asleep of a thread asleep now (state S...) in syscall `nr`
 * on argument `arg0` (read_syscall's SYS_OK), or NULL: ProcBackend._thread_row's
 * wait channel rule (_slept_as); its wait is that row's too (the fd kinds it
 * may depend on only change in the Python path, which reclassifies `slept`
 * before loading). */
static PyObject *asleep_as_before(FastTick *self, Thr *t, char state, long long nr,
                                  long long arg0) {
    Py_ssize_t k, nslept = t->slept ? PyTuple_GET_SIZE(t->slept) : 0;
    if (!nslept || state == 'D' || state == 'R') return NULL;
    for (k = 0; k < nslept; k++) {
        PyObject *r = PyTuple_GET_ITEM(t->slept, k);
        PyObject *s = TFIELD(self, r, T_STATE);
        if (!PyUnicode_Check(s) || PyUnicode_GET_LENGTH(s) != 1 ||
            PyUnicode_READ_CHAR(s, 0) != (Py_UCS4)state)
            continue;
        long long was_nr = PyLong_AsLongLong(TFIELD(self, r, T_SYSCALL));
        long long was_arg = PyLong_AsLongLong(TFIELD(self, r, T_ARG0));
        if (PyErr_Occurred()) {
            PyErr_Clear();
            return NULL;
        }
        if (nr == was_nr && arg0 == was_arg) return r;
    }
    return NULL;
}

/* Keep in step with tracer/backends/procstate.py. */
#define SLEPT_KEPT 4

/* A thread asleep where none of its recent rows slept (ProcBackend._thread_row
 * without `before`), in syscall `nr` on `arg0` (read_syscall's SYS_OK,
 * SYS_OUTSIDE or SYS_NONE): its wait channel, and the wait the backend's classifier
 * names from them and the argument's fd kind.  Fills w (new references): 0;
 * 1: the Python path must look (a file it has not opened, text this does
 * not parse, no classifier); -1: a Python error. */
static int new_wait(FastTick *self, Proc *p, Thr *t, char state, long long nr, long long arg0,
                    PyObject **w) {
    char buf[256];
    if (!self->classify || t->wchan_fd < 0) return 1;
    Py_ssize_t n = rd(t->wchan_fd, buf, sizeof buf);
    if (n < 0) n = 0; /* (an empty read: "", as procfs.parse_wchan) */
    Py_ssize_t a = 0, b = n;
    while (a < b && (unsigned char)buf[a] <= ' ') a++;
    while (b > a && (unsigned char)buf[b - 1] <= ' ') b--;
    for (Py_ssize_t i = a; i < b; i++)
        if ((unsigned char)buf[i] >= 0x80) return 1; /* (parse_wchan replaces non-ASCII) */
    if (b - a == 1 && buf[a] == '0') b = a;
    w[W_STATE] = PyUnicode_FromOrdinal((unsigned char)state);
    w[W_SYSCALL] = ll(nr);
    w[W_ARG0] = ll(arg0);
    w[W_WCHAN] = b > a ? PyUnicode_FromStringAndSize(buf + a, b - a) : Py_NewRef(self->empty);
    w[W_WAIT] = NULL;
    if (w[W_STATE] && w[W_SYSCALL] && w[W_ARG0] && w[W_WCHAN]) {
        PyObject *kind = p->kinds ? PyDict_GetItemWithError(p->kinds, w[W_ARG0]) : NULL;
        if (kind || !PyErr_Occurred())
            w[W_WAIT] = PyObject_CallFunctionObjArgs(self->classify, w[W_STATE], w[W_SYSCALL],
                                                     w[W_ARG0], w[W_WCHAN],
                                                     kind ? kind : Py_None, NULL);
    }
    if (w[W_WAIT] && !PyUnicode_Check(w[W_WAIT]))
        PyErr_SetString(PyExc_TypeError, "classify must return a str");
    if (!w[W_WAIT] || PyErr_Occurred()) {
        for (int i = 0; i < W_COUNT; i++) Py_CLEAR(w[i]);
        return -1;
    }
    return 0;
}

/* ThreadState.slept after a new row asleep: it first, then the others not
 * asleep in the same state, syscall and argument, SLEPT_KEPT at most. */
static PyObject *slept_with(FastTick *self, PyObject *slept, PyObject *row) {
    PyObject *out = PyList_New(0);
    if (!out || PyList_Append(out, row) < 0) goto fail;
    PyObject *s = TFIELD(self, row, T_STATE), *nr = TFIELD(self, row, T_SYSCALL),
             *arg = TFIELD(self, row, T_ARG0);
    Py_ssize_t n = slept ? PyTuple_GET_SIZE(slept) : 0;
    for (Py_ssize_t k = 0; k < n && PyList_GET_SIZE(out) < SLEPT_KEPT; k++) {
        PyObject *r = PyTuple_GET_ITEM(slept, k);
        int same = PyUnicode_Compare(TFIELD(self, r, T_STATE), s) == 0 &&
                   PyObject_RichCompareBool(TFIELD(self, r, T_SYSCALL), nr, Py_EQ) == 1 &&
                   PyObject_RichCompareBool(TFIELD(self, r, T_ARG0), arg, Py_EQ) == 1;
        if (PyErr_Occurred()) goto fail;
        if (!same && PyList_Append(out, r) < 0) goto fail;
    }
    PyObject *t = PyList_AsTuple(out);
    Py_DECREF(out);
    return t;
fail:
    Py_XDECREF(out);
    return NULL;
}

static void discard(Proc *p) {
    for (Py_ssize_t i = 0; i < p->nthr; i++) {
        Py_CLEAR(p->thr[i].nrow);
        Py_CLEAR(p->thr[i].nslept);
    }
}

enum { DONE_IDLE = 0, DONE_RAN = 1, FALLBACK = 2, ERROR = 3 };

/* A process row (ProcBackend._process_row), with its CPU times (stolen). */
static PyObject *process_row(FastTick *self, Proc *p, long long ppid, long long nthreads,
                             PyObject *user_ns, PyObject *system_ns, long long cutime,
                             long long cstime) {
    PyObject *v[P_COUNT];
    v[P_PID] = PyLong_FromLong(p->pid);
    v[P_PPID] = ll(ppid);
    v[P_NUM_THREADS] = ll(nthreads);
    v[P_RSS_BYTES] = ll(p->rss);
    v[P_USER_NS] = user_ns;
    v[P_SYSTEM_NS] = system_ns;
    v[P_READ_CHARS] = ll(p->io[0]);
    v[P_WRITE_CHARS] = ll(p->io[1]);
    v[P_READ_BYTES] = ll(p->io[2]);
    v[P_WRITE_BYTES] = ll(p->io[3]);
    v[P_CHILDREN_USER_NS] = ll(cutime * self->tick_ns);
    v[P_CHILDREN_SYSTEM_NS] = ll(cstime * self->tick_ns);
    return make_row(self->process_type, self->px, v, P_COUNT);
}

/* The process's own files (ProcBackend._read_process, _stat_row): its `stat`,
 * and its `statm` and `io` when slow_due.  The row (a new reference), or
 * NULL: with *fallback set when the Python path must look (gone, a zombie,
 * a thread count that moved), else a Python error. */
static PyObject *read_prow(FastTick *self, Proc *p, long long now, int slow_due, int *fallback) {
    char buf[READ_MAX];
    Stat st;
    *fallback = 1;
    Py_ssize_t n = rd(p->fd_stat, buf, READ_MAX);
    if (n < 0 || parse_stat(buf, n, &st) < 0 || st.state == 'Z' || st.state == 'X' ||
        st.num_threads != p->nthr)
        return NULL;
    if (slow_due) {
        long long statm[2];
        n = rd(p->fd_statm, buf, READ_MAX);
        if (n < 0 || parse_ints(buf, n, statm, 2) < 0) return NULL;
        p->rss = statm[1] * self->page;
        n = rd(p->fd_io, buf, READ_MAX);
        if (n > 0) {
            p->io[0] = io_field(buf, n, "rchar:");
            p->io[1] = io_field(buf, n, "wchar:");
            p->io[2] = io_field(buf, n, "read_bytes:");
            p->io[3] = io_field(buf, n, "write_bytes:");
        }
        p->slow_ns = now;
    }
    *fallback = 0;
    return process_row(self, p, st.ppid, st.num_threads, ll(st.utime * self->tick_ns),
                       ll(st.stime * self->tick_ns), st.cutime, st.cstime);
}

/* Whether a row says its thread was asleep (any state but R). */
static int row_asleep(FastTick *self, Thr *t) {
    PyObject *state = TFIELD(self, t->row, T_STATE);
    return !PyUnicode_Check(state) || PyUnicode_GET_LENGTH(state) != 1 ||
           PyUnicode_READ_CHAR(state, 0) != 'R';
}

static int sample_proc(FastTick *self, Proc *p, long long now, int saturated) {
    char buf[READ_MAX];
    if (p->python_at && now >= p->python_at) return FALLBACK;
    int ran = 0, check = 0;
    for (Py_ssize_t i = 0; i < p->nthr; i++) {
        Thr *t = &p->thr[i];
        Py_ssize_t n = rd(t->sched_fd, t->nsched, SCHED_MAX);
        if (n < 0) return FALLBACK;
        t->nsched_len = n;
        t->check = 0;
        if (n != t->sched_len || memcmp(t->nsched, t->sched, n) != 0)
            ran = 1;
        else if (saturated && row_asleep(self, t))
            check = t->check = 1;
    }
    if (ran) {
        p->dirty = 1;
        p->idle_run = 0;
    }
    if (p->dirty && !p->scan_due) {
        /* FdSchedule.due (tracer/fdscan.py): a look at the fd table is due,
         * or the fd count moved.  The tick goes on; the Python path looks
         * after it (Sampler._looked_after_c), as its own tick looks after
         * sampling. */
        if (now >= p->scan_at) {
            p->scan_due = 1;
        } else if (p->counted && now >= p->count_at) {
            p->count_at = now + self->check_min_ns;
            struct stat sb;
            if (p->fd_dir >= 0 && fstat(p->fd_dir, &sb) == 0 && sb.st_size &&
                sb.st_size != p->nfds) {
                p->scan_at = now;
                p->scan_due = 1;
            }
        }
    }
    /* (a big process: taskstats checks it for less while it idles) */
    if (!ran && p->idle_back && ++p->idle_run >= p->idle_back) return FALLBACK;
    if (!ran && !check) {
        if (p->skips >= self->idle_refresh) {
            /* Its own files now and then (IDLE_REFRESH), here rather than on
             * the Python path: its parent may change, its RSS shrink. */
            int fallback;
            PyObject *prow = read_prow(self, p, now, now - p->slow_ns >= self->slow_ns, &fallback);
            if (!prow) return fallback ? FALLBACK : ERROR;
            Py_SETREF(p->prow, prow);
            p->skips = 0;
            return DONE_IDLE;
        }
        p->skips++;
        return DONE_IDLE;
    }
    int slow_due = now - p->slow_ns >= self->slow_ns;
    int single = p->nthr == 1 && p->thr[0].tid == p->pid;
    Stat st, lead = {0};
    int have_lead = 0;
    for (Py_ssize_t i = 0; i < p->nthr; i++) {
        Thr *t = &p->thr[i];
        if (!t->check && t->nsched_len == t->sched_len &&
            memcmp(t->nsched, t->sched, t->sched_len) == 0)
            continue;
        Py_ssize_t n = rd(t->stat_fd, buf, READ_MAX);
        PyObject *like = NULL;
        if (n < 0 || parse_stat(buf, n, &st) < 0 || st.num_threads != p->nthr) {
            discard(p);
            return FALLBACK; /* a new thread, exiting, gone */
        }
        PyObject *w[W_COUNT] = {NULL};
        int fresh = 0;
        if (st.state == 'Z' || st.state == 'X') {
            discard(p);
            return FALLBACK; /* exiting: the Python path takes its last sample and drops it */
        }
        if (st.state != 'R') {
            long long nr, arg0;
            int sys = read_syscall(t, &nr, &arg0);
            if (sys == SYS_RUNNING) {
                st.state = 'R'; /* woke after its stat was read: awake at this sample */
            } else if (!(sys == SYS_OK && (like = asleep_as_before(self, t, st.state, nr, arg0)))) {
                /* asleep elsewhere: its wait channel and wait */
                int r = sys == SYS_UNREAD ? 1 : new_wait(self, p, t, st.state, nr, arg0, w);
                if (r) {
                    discard(p);
                    return r < 0 ? ERROR : FALLBACK;
                }
                fresh = 1;
            }
        }
        long long sched[3];
        if (parse_ints(t->nsched, t->nsched_len, sched, 3) < 0) {
            for (int k = 0; k < W_COUNT; k++) Py_CLEAR(w[k]);
            discard(p);
            return FALLBACK;
        }
        long long vol = PyLong_AsLongLong(TFIELD(self, t->row, T_CTX_VOL));
        long long invol = PyLong_AsLongLong(TFIELD(self, t->row, T_CTX_INVOL));
        t->npcount = t->pcount;
        t->nstatus_ns = t->status_ns;
        if (!(sched[2] == t->pcount || now - t->status_ns < self->slow_ns)) {
            /* ProcBackend._thread_row: the context switches, at most every SLOW_COUNTER_NS */
            char sbuf[READ_MAX]; /* not buf: st.comm points into it */
            Py_ssize_t sn = rd(t->status_fd, sbuf, READ_MAX);
            long long a = sn < 0 ? -1 : field_after(sbuf, sn, "voluntary_ctxt_switches:");
            long long b = sn < 0 ? -1 : field_after(sbuf, sn, "nonvoluntary_ctxt_switches:");
            if (a < 0 || b < 0) {
                for (int k = 0; k < W_COUNT; k++) Py_CLEAR(w[k]);
                discard(p);
                return FALLBACK;
            }
            vol = a;
            invol = b;
            t->npcount = sched[2];
            t->nstatus_ns = now;
        }
        t->nrow = thread_row(self, p, t, &st, sched[0], sched[1], vol, invol, like,
                             fresh ? w : NULL);
        if (!t->nrow) {
            discard(p);
            return ERROR;
        }
        if (fresh && st.state != 'D' && !(t->nslept = slept_with(self, t->slept, t->nrow))) {
            discard(p);
            return ERROR;
        }
        if (t->tid == p->pid) {
            lead = st; /* (its comm points into buf: not used after this loop) */
            have_lead = 1;
        }
    }
    /* The process row (ProcBackend._sample_single / _read_process). */
    PyObject *prow;
    if (single && !slow_due && have_lead) {
        const Py_ssize_t *x = self->px;
        prow = process_row(self, p, lead.ppid, 1, Py_NewRef(PyTuple_GET_ITEM(p->prow, x[P_USER_NS])),
                           Py_NewRef(PyTuple_GET_ITEM(p->prow, x[P_SYSTEM_NS])), lead.cutime,
                           lead.cstime);
    } else {
        int fallback;
        prow = read_prow(self, p, now, slow_due, &fallback);
        if (!prow) {
            discard(p);
            return fallback ? FALLBACK : ERROR;
        }
    }
    PyObject *rows = PyList_New(p->nthr);
    if (!prow || !rows) {
        Py_XDECREF(prow);
        Py_XDECREF(rows);
        discard(p);
        return ERROR;
    }
    /* Commit. */
    for (Py_ssize_t i = 0; i < p->nthr; i++) {
        Thr *t = &p->thr[i];
        if (t->nrow) {
            Py_SETREF(t->row, t->nrow);
            t->nrow = NULL;
            memcpy(t->sched, t->nsched, t->nsched_len);
            t->sched_len = t->nsched_len;
            t->pcount = t->npcount;
            t->status_ns = t->nstatus_ns;
        }
        if (t->nslept) {
            Py_SETREF(t->slept, t->nslept);
            t->nslept = NULL;
        }
        PyList_SET_ITEM(rows, i, Py_NewRef(t->row));
    }
    Py_SETREF(p->prow, prow);
    Py_SETREF(p->rows, rows);
    p->skips = 0;
    return ran ? DONE_RAN : DONE_IDLE;
}

#define GIL_REVALIDATE_EVERY 64 /* gilstate.REVALIDATE_EVERY */
#define MAX_TID (1LL << 22)

/* The holder's kernel tid from its PyThreadState (gilstate._resolve_tid). */
static long gil_holder_tid(Proc *p, unsigned long long tstate) {
    unsigned long long v = 0;
    if (!tstate || pread(p->gil_fd, &v, 8, (off_t)(tstate + p->gil_tid_off)) != 8) return 0;
    if (p->gil_pthread_off >= 0) { /* 3.10: a pthread_t, whose tid is an int inside it */
        unsigned int tid = 0;
        if (!v || pread(p->gil_fd, &tid, 4, (off_t)(v + p->gil_pthread_off)) != 4) return 0;
        v = tid;
    }
    return v > 0 && (long long)v < MAX_TID ? (long)v : 0;
}

/* GilReader.read: the GIL struct's first 32 bytes (interval, last_holder,
 * locked, switch_number), and the holder's tid when the holder or the
 * switch count moved, or every GIL_REVALIDATE_EVERY reads (a freed thread
 * state reused at the same address by a new thread counts no switch).
 * 0 when read, -1 when it cannot be (gone). */
static int read_gil(Proc *p) {
    unsigned char b[32];
    if (pread(p->gil_fd, b, sizeof b, (off_t)p->gil_addr) != (ssize_t)sizeof b) return -1;
    unsigned long long ptr, sw;
    unsigned int locked;
    memcpy(&ptr, b + 8, 8);
    memcpy(&locked, b + 16, 4);
    memcpy(&sw, b + 24, 8);
    if (!p->gil_have || (long long)ptr != p->gil_ptr || (long long)sw != p->gil_sw ||
        p->gil_left <= 0) {
        p->gil_tid = gil_holder_tid(p, ptr);
        p->gil_left = p->gil_tid ? GIL_REVALIDATE_EVERY : 0;
    } else {
        p->gil_left--;
    }
    p->gil_ptr = (long long)ptr;
    p->gil_sw = (long long)sw;
    p->gil_locked = locked == 1;
    p->gil_have = 1;
    return 0;
}

/* A row of the gil table for a process whose GIL is read: read again only
 * if one of its threads ran (an interpreter none of whose threads ran since
 * cannot have changed it). */
static int gil_row(FastTick *self, Proc *p, PyObject *t, int ran, PyObject *gbuf) {
    if (p->gil_fd < 0 || gbuf == NULL) return 0;
    if ((ran || !p->gil_have) && read_gil(p) < 0) return 0;
    PyObject *v[G_COUNT];
    v[G_T_NS] = Py_NewRef(t);
    v[G_PID] = PyLong_FromLong(p->pid);
    v[G_LOCKED] = PyLong_FromLong(p->gil_locked);
    v[G_HOLDER] = PyLong_FromLong(p->gil_tid);
    v[G_SWITCHES] = PyLong_FromUnsignedLongLong((unsigned long long)p->gil_sw);
    PyObject *row = make_row(&PyTuple_Type, self->gx, v, G_COUNT);
    if (!row) return -1;
    int bad = PyList_Append(gbuf, row);
    Py_DECREF(row);
    return bad;
}

static int append_pid(PyObject *list, long pid) {
    PyObject *o = PyLong_FromLong(pid);
    int r = o ? PyList_Append(list, o) : -1;
    Py_XDECREF(o);
    return r;
}

/* More runnable tasks than CPUs (the reader itself included): a thread
 * woken since its last sample may be waiting for a CPU, with a schedstat
 * that does not move until it runs (see ProcBackend.saturated). */
static int saturated(FastTick *self) {
    char buf[128];
    if (self->loadavg_fd < 0 || self->ncpu <= 0) return 0;
    Py_ssize_t n = rd(self->loadavg_fd, buf, sizeof buf - 1);
    if (n <= 0) return 0;
    buf[n] = 0;
    /* "0.52 0.58 0.59 3/317 12345": the fourth field's first number */
    const char *q = buf;
    for (int f = 0; f < 3 && q; f++) {
        q = strchr(q, ' ');
        if (q) q++;
    }
    if (!q) return 0;
    return strtoll(q, NULL, 10) > self->ncpu;
}

/* Sample every loaded process at `now`, appending (t_ns, *prow, *counts) and
 * (t_ns, rows) as Sampler._sample does (a processes row is that, as the
 * schema says); the pids that ran go to `ran`, those the Python path must
 * take for this tick to `back`.  -1 on a Python error. */
static int tick_all(FastTick *self, long long now, PyObject *pbuf, PyObject *tbuf, PyObject *gbuf,
                    PyObject *ran, PyObject *back, PyObject *scan, Py_ssize_t *nrows) {
    PyObject *t = PyLong_FromLongLong(now);
    if (!t) return -1;
    int busy = saturated(self);
    for (Py_ssize_t k = 0; k < self->nprocs; k++) {
        Proc *p = &self->procs[k];
        int r = sample_proc(self, p, now, busy);
        if (r == ERROR) goto fail;
        if (r == FALLBACK) {
            p->scan_due = 0; /* (the Python path's tick looks itself) */
            if (append_pid(back, p->pid) < 0) goto fail;
            continue;
        }
        Py_ssize_t nc = PyTuple_GET_SIZE(p->counts);
        PyObject *row = PyTuple_New(1 + P_COUNT + nc);
        if (!row) goto fail;
        PyTuple_SET_ITEM(row, 0, Py_NewRef(t));
        for (int i = 0; i < P_COUNT; i++)
            PyTuple_SET_ITEM(row, 1 + i, Py_NewRef(PyTuple_GET_ITEM(p->prow, i)));
        for (Py_ssize_t i = 0; i < nc; i++)
            PyTuple_SET_ITEM(row, 1 + P_COUNT + i, Py_NewRef(PyTuple_GET_ITEM(p->counts, i)));
        int bad = PyList_Append(pbuf, row);
        Py_DECREF(row);
        if (bad) goto fail;
        if (p->nthr) {
            PyObject *batch = PyTuple_Pack(2, t, p->rows);
            if (!batch) goto fail;
            bad = PyList_Append(tbuf, batch);
            Py_DECREF(batch);
            if (bad) goto fail;
            *nrows += p->nthr;
        }
        if (gil_row(self, p, t, r == DONE_RAN, gbuf) < 0) goto fail;
        if (r == DONE_RAN && append_pid(ran, p->pid) < 0) goto fail;
        if (p->scan_due) {
            p->scan_due = 0;
            if (append_pid(scan, p->pid) < 0) goto fail;
        }
    }
    Py_DECREF(t);
    return 0;
fail:
    Py_DECREF(t);
    return -1;
}

/* bind(processes, thread_batches, gil): the sink's lists (Sink.tick_buffers),
 * the same for its whole life, that tick and burst append to. */
static PyObject *FastTick_bind(FastTick *self, PyObject *args) {
    PyObject *pbuf, *tbuf, *gbuf;
    if (!PyArg_ParseTuple(args, "O!O!O!", &PyList_Type, &pbuf, &PyList_Type, &tbuf, &PyList_Type,
                          &gbuf))
        return NULL;
    Py_XSETREF(self->pbuf, Py_NewRef(pbuf));
    Py_XSETREF(self->tbuf, Py_NewRef(tbuf));
    Py_XSETREF(self->gbuf, Py_NewRef(gbuf));
    Py_RETURN_NONE;
}

static int bound(FastTick *self) {
    if (self->pbuf && self->tbuf && self->gbuf) return 1;
    PyErr_SetString(PyExc_RuntimeError, "FastTick: bind() a sink first");
    return 0;
}

/* tick(t_ns) -> (ran pids, pids for the Python path, rows, pids to look at)
 * "to look at": sampled here, with an fd look due (FdSchedule) that the
 * Python path does after the tick. */
static PyObject *FastTick_tick(FastTick *self, PyObject *arg) {
    long long now = PyLong_AsLongLong(arg);
    if (now == -1 && PyErr_Occurred()) return NULL;
    if (!bound(self)) return NULL;
    PyObject *ran = PyList_New(0), *back = PyList_New(0), *scan = PyList_New(0);
    Py_ssize_t nrows = 0;
    if (!ran || !back || !scan ||
        tick_all(self, now, self->pbuf, self->tbuf, self->gbuf, ran, back, scan, &nrows) < 0) {
        Py_XDECREF(ran);
        Py_XDECREF(back);
        Py_XDECREF(scan);
        return NULL;
    }
    return Py_BuildValue("(NNnN)", ran, back, nrows, scan);
}

/* ------------------------------------------------------------ the loop */

static long long mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* The last pid the kernel handed out, from /proc/loadavg ("... 1/234 5678"). */
static long long last_pid(int fd) {
    char buf[128];
    Py_ssize_t n = rd(fd, buf, sizeof buf - 1);
    if (n <= 0) return -1;
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' ')) n--;
    Py_ssize_t i = n;
    while (i > 0 && buf[i - 1] != ' ') i--;
    long long v = 0;
    if (i == n) return -1;
    for (; i < n; i++) {
        if (buf[i] < '0' || buf[i] > '9') return -1;
        v = v * 10 + (buf[i] - '0');
    }
    return v;
}

/* Whether the pids first..last (handed out since the last look) are all
 * someone else's: none is a child, or a thread, of a traced or an excluded
 * process.  Then Sampler.tick would find nothing (ProcBackend.new_children
 * reads the same `stat`s), and the C loop carries on; otherwise, and when
 * there are many or the numbers wrapped, Python looks. */
static int all_foreign(FastTick *self, long long first, long long last, PyObject *exclude) {
    if (first <= 0 || last < first || last - first >= self->probe_max) return 0;
    char path[64], buf[READ_MAX];
    for (long long pid = first; pid <= last; pid++) {
        snprintf(path, sizeof path, "/proc/%lld/stat", pid);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue; /* gone already, as Python would find */
        Py_ssize_t n = rd(fd, buf, READ_MAX);
        close(fd);
        Stat st;
        if (n < 0 || parse_stat(buf, n, &st) < 0) continue;
        if (find(self, (long)st.ppid)) return 0;
        PyObject *ppid = PyLong_FromLongLong(st.ppid);
        int excluded = ppid ? PySet_Contains(exclude, ppid) : -1;
        Py_XDECREF(ppid);
        if (excluded != 0) {
            PyErr_Clear();
            return 0;
        }
    }
    return 1;
}

/* The fd that becomes readable when one of `sigs` (blocked) is pending;
 * kept while the set stays the same. */
static int signal_fd(FastTick *self, PyObject *sigs) {
    sigset_t mask;
    sigemptyset(&mask);
    Py_ssize_t n = PyTuple_GET_SIZE(sigs);
    if (n == 0) return -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        long s = PyLong_AsLong(PyTuple_GET_ITEM(sigs, i));
        if (s == -1 && PyErr_Occurred()) return -2;
        sigaddset(&mask, (int)s);
    }
    if (self->sigfd >= 0 && memcmp(&mask, &self->sigmask, sizeof mask) == 0) return self->sigfd;
    if (self->sigfd >= 0) close(self->sigfd);
    self->sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (self->sigfd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -2;
    }
    self->sigmask = mask;
    return self->sigfd;
}

/* burst(deadline, period, until, signals, watch_fd, loadavg_fd, last_pid, exclude,
 *       ran_flag, next_child_scan)
 *   -> (done, missed, deadline, last_ns, ran pids, rows, ran_flag, next_child_scan,
 *       pending_ns, back, scan, last_pid)
 *
 * run_loop's sleep and Sampler.tick in one: while every traced process is
 * loaded here, sleep to each deadline and tick, as run_loop would, without
 * waking the interpreter.  Returns to Python:
 *   - before sleeping past `until` (a flush, an observer or the end is due);
 *   - when one of `signals` is pending or `watch_fd` is readable, without
 *     taking it (Python's wait does), or on EINTR;
 *   - with `pending_ns` set, for a tick the Python path must do: whole when
 *     `back` is None (a new pid may be a traced process's child), or finish
 *     (`back`: the pids handed back; the rows of the others are appended);
 *   - with `scan` not empty: the pids of the last tick (the pending one, or
 *     `last_ns`) whose fd look is due, for the Python path to do.
 * `done` ticks were taken; `deadline` is the one the last or pending tick
 * was for, or the next one to sleep for.  The look for new children is the
 * one of Sampler.tick: when a process ran, at most every check_min_ns, and
 * only /proc/loadavg's last pid when it did not move; pids handed out to
 * others (all_foreign) move it on (`last_pid`, for ProcBackend). */
static PyObject *FastTick_burst(FastTick *self, PyObject *args) {
    long long deadline, period, until, lpid, next_child;
    int watch, lfd, ran_flag;
    PyObject *sigs, *exclude;
    if (!PyArg_ParseTuple(args, "LLLO!iiLO!pL", &deadline, &period, &until, &PyTuple_Type, &sigs,
                          &watch, &lfd, &lpid, &PySet_Type, &exclude, &ran_flag, &next_child))
        return NULL;
    if (!bound(self)) return NULL;
    if (period <= 0) {
        PyErr_SetString(PyExc_ValueError, "period must be positive");
        return NULL;
    }
    int sfd = signal_fd(self, sigs);
    if (sfd == -2) return NULL;
    struct pollfd pfd[2];
    int npfd = 0;
    if (sfd >= 0) pfd[npfd++] = (struct pollfd){.fd = sfd, .events = POLLIN};
    if (watch >= 0) pfd[npfd++] = (struct pollfd){.fd = watch, .events = POLLIN};
    PyObject *ran = PySet_New(NULL), *tick_ran = PyList_New(0), *back = PyList_New(0),
             *scan = PyList_New(0);
    Py_ssize_t nrows = 0;
    long long done = 0, missed = 0, last = 0, pending = 0;
    int whole = 0;
    if (!ran || !tick_ran || !back || !scan) goto fail;
    for (;;) {
        if (deadline >= until) break;
        long long now = mono_ns();
        if (now < deadline) {
            long long left = deadline - now;
            struct timespec ts = {left / 1000000000LL, left % 1000000000LL};
            int r, err;
            Py_BEGIN_ALLOW_THREADS /* (as time.sleep: other threads may run meanwhile) */
            r = ppoll(npfd ? pfd : NULL, npfd, &ts, NULL);
            err = errno;
            Py_END_ALLOW_THREADS
            if (r > 0) break;
            if (r < 0) {
                if (err != EINTR) {
                    errno = err;
                    PyErr_SetFromErrno(PyExc_OSError);
                    goto fail;
                }
                if (PyErr_CheckSignals() < 0) goto fail;
                break;
            }
        }
        now = mono_ns();
        if (ran_flag && now >= next_child) {
            long long lp = last_pid(lfd);
            if (lp != lpid) {
                if (!all_foreign(self, lpid + 1, lp, exclude)) {
                    pending = now;
                    whole = 1;
                    break;
                }
                lpid = lp;
            }
            ran_flag = 0;
            next_child = now + self->check_min_ns;
        }
        if (tick_all(self, now, self->pbuf, self->tbuf, self->gbuf, tick_ran, back, scan,
                     &nrows) < 0)
            goto fail;
        Py_ssize_t nran = PyList_GET_SIZE(tick_ran);
        for (Py_ssize_t i = 0; i < nran; i++)
            if (PySet_Add(ran, PyList_GET_ITEM(tick_ran, i)) < 0) goto fail;
        if (nran) {
            ran_flag = 1;
            if (PyList_SetSlice(tick_ran, 0, nran, NULL) < 0) goto fail;
        }
        if (PyList_GET_SIZE(back)) {
            pending = now;
            break;
        }
        done++;
        last = now;
        deadline += period;
        now = mono_ns();
        if (now >= deadline) {
            long long skipped = (now - deadline) / period + 1;
            missed += skipped;
            deadline += skipped * period;
        }
        if (PyList_GET_SIZE(scan)) break;
    }
    Py_DECREF(tick_ran);
    if (whole) Py_SETREF(back, Py_NewRef(Py_None));
    return Py_BuildValue("(LLLLNnNLLNNL)", done, missed, deadline, last, ran, nrows,
                         PyBool_FromLong(ran_flag), next_child, pending, back, scan, lpid);
fail:
    Py_XDECREF(ran);
    Py_XDECREF(tick_ran);
    Py_XDECREF(back);
    Py_XDECREF(scan);
    return NULL;
}

/* state(pid) -> (prow, rows, (slow_ns, rss, skips), io, threads, (scan_at, count_at)) or None
 * threads: [(schedstat bytes, pcount, status_ns, slept rows)] in the order of rows: what the
 * Python path takes over when a process is handed back (FastPath.sync). */
static PyObject *FastTick_state(FastTick *self, PyObject *arg) {
    long pid = PyLong_AsLong(arg);
    if (pid == -1 && PyErr_Occurred()) return NULL;
    Proc *p = find(self, pid);
    if (!p) Py_RETURN_NONE;
    PyObject *threads = PyList_New(p->nthr);
    if (!threads) return NULL;
    for (Py_ssize_t i = 0; i < p->nthr; i++) {
        Thr *t = &p->thr[i];
        PyObject *item = Py_BuildValue("(y#LLO)", t->sched, t->sched_len, t->pcount, t->status_ns,
                                       t->slept ? t->slept : Py_None);
        if (!item) {
            Py_DECREF(threads);
            return NULL;
        }
        PyList_SET_ITEM(threads, i, item);
    }
    return Py_BuildValue("(OO(LLl)(LLLL)N(LL))", p->prow, p->rows, p->slow_ns, p->rss, p->skips,
                         p->io[0], p->io[1], p->io[2], p->io[3], threads, p->scan_at, p->count_at);
}

static PyObject *FastTick_pids(FastTick *self, PyObject *Py_UNUSED(ignored)) {
    PyObject *out = PySet_New(NULL);
    for (Py_ssize_t i = 0; out && i < self->nprocs; i++) {
        PyObject *pid = PyLong_FromLong(self->procs[i].pid);
        if (!pid || PySet_Add(out, pid) < 0) Py_CLEAR(out);
        Py_XDECREF(pid);
    }
    return out;
}

static PyMethodDef FastTick_methods[] = {
    {"load", (PyCFunction)FastTick_load, METH_VARARGS, "Take over a process's state from Python."},
    {"drop", (PyCFunction)FastTick_drop, METH_O, "Forget a process."},
    {"looked", (PyCFunction)FastTick_looked, METH_VARARGS, "After an fd look: its results."},
    {"bind", (PyCFunction)FastTick_bind, METH_VARARGS, "The sink's lists to append to."},
    {"tick", (PyCFunction)FastTick_tick, METH_O, "Sample the loaded processes."},
    {"burst", (PyCFunction)FastTick_burst, METH_VARARGS, "Sleep and tick until Python is needed."},
    {"pids", (PyCFunction)FastTick_pids, METH_NOARGS, "The loaded pids."},
    {"state", (PyCFunction)FastTick_state, METH_O, "What the C tick last emitted for a pid."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject FastTickType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "circuit.tracer.backends._fasttick.FastTick",
    .tp_basicsize = sizeof(FastTick),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = FastTick_new,
    .tp_init = (initproc)FastTick_init,
    .tp_dealloc = (destructor)FastTick_dealloc,
    .tp_methods = FastTick_methods,
    .tp_doc = "The sampler's steady-state tick (see the module's source).",
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_fasttick",
    .m_doc = "The sampler's steady-state tick in C.",
    .m_size = -1,
};

/* The names of n fields, as a tuple of str. */
static PyObject *field_names(const char *const *names, int n) {
    PyObject *t = PyTuple_New(n);
    for (int i = 0; t && i < n; i++) {
        PyObject *s = PyUnicode_FromString(names[i]);
        if (!s) Py_CLEAR(t);
        else PyTuple_SET_ITEM(t, i, s);
    }
    return t;
}

static int add_names(PyObject *m, const char *attr, const char *const *names, int n) {
    PyObject *t = field_names(names, n);
    int r = t ? PyModule_AddObjectRef(m, attr, t) : -1;
    Py_XDECREF(t);
    return r;
}

/* API: the version of what FastTick takes and returns (fasttick.py checks
 * it: a module built from another version of this file is not used). */
PyMODINIT_FUNC PyInit__fasttick(void) {
    if (PyType_Ready(&FastTickType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    if (PyModule_AddObjectRef(m, "FastTick", (PyObject *)&FastTickType) < 0 ||
        PyModule_AddIntConstant(m, "API", 7) < 0 ||
        add_names(m, "THREAD_FIELDS", THREAD_NAMES, T_COUNT) < 0 ||
        add_names(m, "PROCESS_FIELDS", PROCESS_NAMES, P_COUNT) < 0 ||
        add_names(m, "GIL_FIELDS", GIL_NAMES, G_COUNT) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
