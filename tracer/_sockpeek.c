/* What a TCP or UDP socket of a traced process is, in one call: the C half
 * of tracer/sockpeek.py (which says why a copy of the fd, and what it may do
 * to the target).  The same steps as sockpeek.ask_copy on ctypes, which stays
 * as the path where this module is not built; per socket, one call instead
 * of six through ctypes (a crawler's fd scan resolves hundreds a second).
 *
 * peek(pidfd, fd, inode)
 *   -> (family, protocol, tcp state or 0, local sockaddr bytes, peer bytes or None)
 *    | None   the copy is not the socket `inode` (the number was reused)
 *    | False  not a TCP or UDP socket, or one that would not say (asked elsewhere)
 * raises OSError when pidfd_getfd fails (EBADF: closed since the scan). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438 /* (one number on every architecture but alpha) */
#endif
#define TCP_INFO_OPT 11 /* TCP_INFO: its first byte is tcpi_state */

/* False, or None, or the tuple: what the copy says; the copy is left open. */
static PyObject *ask(int copy, unsigned long long inode) {
    struct stat sb;
    if (fstat(copy, &sb) < 0) Py_RETURN_FALSE;
    if ((unsigned long long)sb.st_ino != inode) Py_RETURN_NONE;
    struct sockaddr_storage local, peer;
    socklen_t llen = sizeof local, plen = sizeof peer;
    if (getsockname(copy, (struct sockaddr *)&local, &llen) < 0 || llen < sizeof(sa_family_t))
        Py_RETURN_FALSE;
    int family = local.ss_family;
    if (family != AF_INET && family != AF_INET6) Py_RETURN_FALSE;
    /* IPPROTO_TCP is only ever a SOCK_STREAM socket, IPPROTO_UDP a SOCK_DGRAM one. */
    int protocol = 0;
    socklen_t olen = sizeof protocol;
    if (getsockopt(copy, SOL_SOCKET, SO_PROTOCOL, &protocol, &olen) < 0) Py_RETURN_FALSE;
    unsigned char state = 0;
    if (protocol == IPPROTO_TCP) {
        socklen_t slen = 1; /* the kernel copies only what is asked */
        if (getsockopt(copy, IPPROTO_TCP, TCP_INFO_OPT, &state, &slen) < 0) Py_RETURN_FALSE;
    } else if (protocol != IPPROTO_UDP) {
        Py_RETURN_FALSE; /* raw, SCTP, UDP-Lite, MPTCP...: named by their protocol elsewhere */
    }
    PyObject *there;
    if (getpeername(copy, (struct sockaddr *)&peer, &plen) == 0) {
        there = PyBytes_FromStringAndSize((const char *)&peer, plen);
    } else if (errno == ENOTCONN) {
        there = Py_NewRef(Py_None);
    } else {
        Py_RETURN_FALSE;
    }
    if (!there) return NULL;
    return Py_BuildValue("(iiiy#N)", family, protocol, (int)state, (const char *)&local,
                         (Py_ssize_t)llen, there);
}

static PyObject *peek(PyObject *Py_UNUSED(module), PyObject *args) {
    int pidfd, fd;
    unsigned long long inode;
    if (!PyArg_ParseTuple(args, "iiK", &pidfd, &fd, &inode)) return NULL;
    long copy = syscall(SYS_pidfd_getfd, pidfd, fd, 0);
    if (copy < 0) return PyErr_SetFromErrno(PyExc_OSError);
    PyObject *out = ask((int)copy, inode);
    close((int)copy); /* at once, whatever it said: see sockpeek.py */
    return out;
}

static PyMethodDef methods[] = {
    {"peek", peek, METH_VARARGS, "What the socket behind a traced process's fd is."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_sockpeek",
    .m_doc = "A TCP or UDP socket of another process, asked through a copy of its fd.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__sockpeek(void) { return PyModule_Create(&module); }
