/* The compiled fan-out loop of the issue 23 experiment (bench/floor.py loops).
 *
 * send_all(fds, frame) calls send(2) once per socket in C and returns what
 * Python would have to handle: a list of (index, result) for every socket
 * that did not take the whole frame, result being the bytes it took
 * (0 <= result < len(frame)) or -errno (EAGAIN: full, EPIPE/ECONNRESET:
 * gone). An empty list: every socket took every byte. Not shipped: see
 * docs/benchmarks.md, "Fan-out floor (issue 23, part 2)".
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <sys/socket.h>

static PyObject *send_all(PyObject *self, PyObject *args) {
    PyObject *fds;
    Py_buffer frame;
    if (!PyArg_ParseTuple(args, "O!y*", &PyList_Type, &fds, &frame))
        return NULL;
    PyObject *short_writes = PyList_New(0);
    if (short_writes == NULL) {
        PyBuffer_Release(&frame);
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(fds);
    for (Py_ssize_t i = 0; i < n; i++) {
        long fd = PyLong_AsLong(PyList_GET_ITEM(fds, i));
        if (fd == -1 && PyErr_Occurred())
            goto fail;
        ssize_t sent;
        do {
            sent = send((int)fd, frame.buf, (size_t)frame.len, MSG_DONTWAIT | MSG_NOSIGNAL);
        } while (sent < 0 && errno == EINTR);
        if (sent == frame.len)
            continue;
        PyObject *item = Py_BuildValue("(nn)", i, sent < 0 ? (Py_ssize_t)-errno : (Py_ssize_t)sent);
        if (item == NULL || PyList_Append(short_writes, item) < 0) {
            Py_XDECREF(item);
            goto fail;
        }
        Py_DECREF(item);
    }
    PyBuffer_Release(&frame);
    return short_writes;
fail:
    PyBuffer_Release(&frame);
    Py_DECREF(short_writes);
    return NULL;
}

static PyMethodDef methods[] = {
    {"send_all", send_all, METH_VARARGS,
     "send_all(fds: list[int], frame: bytes) -> list[tuple[int, int]]: send frame to every fd; "
     "(index, bytes taken or -errno) for each that did not take all of it."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cfanout", NULL, -1, methods};

PyMODINIT_FUNC PyInit__cfanout(void) { return PyModule_Create(&module); }
