/* Optional C speed-ups of the hot path. Batch.materialize and EventBatch.columns
 * (trio_ingest/_batch.py) and FromIterable (trio_ingest/sources/_memory.py) hold the
 * pure-Python versions: this module must behave exactly like them (tests/test_speedups.py
 * runs both), and is used only when it was built (pip builds it when a C compiler is
 * present; without one, nothing changes but speed).
 *
 * rebuild(event_type, events, payloads) -> list
 *     The events with their current payloads: events[i] itself where payloads[i] is
 *     its payload, else a new event_type tuple (id, payloads[i], key, event_time,
 *     headers) of events[i]'s other fields. What Batch.materialize does in Python,
 *     without the argument tuples and checks of tuple.__new__ (measured: 4x faster).
 *
 * columns(events) -> (ids, keys, event_times, headers)
 *     The metadata columns of the events, in one pass: what EventBatch.columns builds
 *     with four itemgetter maps.
 *
 * all_of_type(items, type) -> bool
 *     Whether every item of the list is exactly of `type`: the check from_iterable
 *     (trio_ingest/sources/_memory.py) makes of each read, without building a set.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define EVENT_FIELDS 5
#define PAYLOAD 1

static PyObject *
rebuild(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "rebuild(event_type, events, payloads)");
        return NULL;
    }
    if (!PyType_Check(args[0]) || !PyType_IsSubtype((PyTypeObject *)args[0], &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "rebuild(): event_type must be a tuple subclass");
        return NULL;
    }
    PyTypeObject *type = (PyTypeObject *)args[0];
    PyObject *events = args[1], *payloads = args[2];
    if (!PyList_CheckExact(events) || !PyList_CheckExact(payloads)) {
        PyErr_SetString(PyExc_TypeError, "rebuild(): events and payloads must be lists");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(payloads);
    if (PyList_GET_SIZE(events) != n) {
        PyErr_SetString(PyExc_ValueError, "rebuild(): events and payloads differ in length");
        return NULL;
    }
    PyObject *out = PyList_New(n);
    if (out == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *event = PyList_GET_ITEM(events, i);
        PyObject *payload = PyList_GET_ITEM(payloads, i);
        if (!PyTuple_Check(event) || PyTuple_GET_SIZE(event) != EVENT_FIELDS) {
            Py_DECREF(out);
            PyErr_Format(PyExc_TypeError, "rebuild(): item %zd is not an event", i);
            return NULL;
        }
        if (PyTuple_GET_ITEM(event, PAYLOAD) == payload) {
            Py_INCREF(event);
            PyList_SET_ITEM(out, i, event);
            continue;
        }
        PyObject *fresh = type->tp_alloc(type, EVENT_FIELDS);
        if (fresh == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        for (Py_ssize_t j = 0; j < EVENT_FIELDS; j++) {
            PyObject *item = j == PAYLOAD ? payload : PyTuple_GET_ITEM(event, j);
            Py_INCREF(item);
            PyTuple_SET_ITEM(fresh, j, item);
        }
        PyList_SET_ITEM(out, i, fresh);
    }
    return out;
}

/* columns(events) -> (ids, keys, event_times, headers): the metadata of a batch's events
 * as four lists, in one pass (four itemgetter maps touch every event four times). */
static PyObject *
columns(PyObject *module, PyObject *events)
{
    if (!PyList_CheckExact(events)) {
        PyErr_SetString(PyExc_TypeError, "columns(): events must be a list");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(events);
    static const Py_ssize_t fields[4] = {0, 2, 3, 4};
    PyObject *lists[4] = {NULL, NULL, NULL, NULL};
    for (int k = 0; k < 4; k++) {
        lists[k] = PyList_New(n);
        if (lists[k] == NULL) {
            goto error;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *event = PyList_GET_ITEM(events, i);
        if (!PyTuple_Check(event) || PyTuple_GET_SIZE(event) != EVENT_FIELDS) {
            PyErr_Format(PyExc_TypeError, "columns(): item %zd is not an event", i);
            goto error;
        }
        for (int k = 0; k < 4; k++) {
            PyObject *item = PyTuple_GET_ITEM(event, fields[k]);
            Py_INCREF(item);
            PyList_SET_ITEM(lists[k], i, item);
        }
    }
    return Py_BuildValue("(NNNN)", lists[0], lists[1], lists[2], lists[3]);

error:
    for (int k = 0; k < 4; k++) {
        Py_XDECREF(lists[k]);
    }
    return NULL;
}

/* all_of_type(items, type) -> bool: whether every item of the list is exactly of `type`
 * (what set(map(type, items)) <= {type} says, without building a set). */
static PyObject *
all_of_type(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyList_CheckExact(args[0]) || !PyType_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "all_of_type(list, type)");
        return NULL;
    }
    PyObject *items = args[0];
    PyTypeObject *type = (PyTypeObject *)args[1];
    Py_ssize_t n = PyList_GET_SIZE(items);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (Py_TYPE(PyList_GET_ITEM(items, i)) != type) {
            Py_RETURN_FALSE;
        }
    }
    Py_RETURN_TRUE;
}

static PyMethodDef methods[] = {
    {"rebuild", (PyCFunction)(void (*)(void))rebuild, METH_FASTCALL,
     "rebuild(event_type, events, payloads) -> the events with their current payloads"},
    {"all_of_type", (PyCFunction)(void (*)(void))all_of_type, METH_FASTCALL,
     "all_of_type(items, type) -> whether every item is exactly of that type"},
    {"columns", (PyCFunction)columns, METH_O,
     "columns(events) -> (ids, keys, event_times, headers) of the events, in one pass"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "trio_ingest._speedups", "C speed-ups of the hot path.", 0, methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&module);
}
