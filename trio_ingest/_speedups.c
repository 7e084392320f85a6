/* Optional C speed-ups of the hot path. Batch (trio_ingest/_batch.py), Event
 * (trio_ingest/_event.py) and FromIterable (trio_ingest/sources/_memory.py) hold the
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
 *
 * payloads(events) -> list
 *     The payload of each event: the payload column Batch.of starts a batch with.
 *
 * tuple_fields(type, fields) -> None
 *     Event's attributes (trio_ingest/_event.py) as member descriptors reading the
 *     tuple's items, and a fixed size for its instances (see below).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

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

/* Fill lists[k] with item fields[k] of each event, for k < count, in one pass over the
 * events (what count itemgetter maps build, touching every event once). On failure, the
 * lists are released and -1 is returned; `name` names the caller in the error. */
static int
take_fields(PyObject *events, const Py_ssize_t *fields, int count, PyObject **lists,
            const char *name)
{
    if (!PyList_CheckExact(events)) {
        PyErr_Format(PyExc_TypeError, "%s(): events must be a list", name);
        return -1;
    }
    Py_ssize_t n = PyList_GET_SIZE(events);
    for (int k = 0; k < count; k++) {
        lists[k] = PyList_New(n);
        if (lists[k] == NULL) {
            goto error;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *event = PyList_GET_ITEM(events, i);
        if (!PyTuple_Check(event) || PyTuple_GET_SIZE(event) != EVENT_FIELDS) {
            PyErr_Format(PyExc_TypeError, "%s(): item %zd is not an event", name, i);
            goto error;
        }
        for (int k = 0; k < count; k++) {
            PyObject *item = PyTuple_GET_ITEM(event, fields[k]);
            Py_INCREF(item);
            PyList_SET_ITEM(lists[k], i, item);
        }
    }
    return 0;

error:
    for (int k = 0; k < count; k++) {
        Py_CLEAR(lists[k]);
    }
    return -1;
}

/* columns(events) -> (ids, keys, event_times, headers): the metadata of a batch's events
 * as four lists, in one pass. */
static PyObject *
columns(PyObject *module, PyObject *events)
{
    static const Py_ssize_t fields[4] = {0, 2, 3, 4};
    PyObject *lists[4] = {NULL, NULL, NULL, NULL};
    if (take_fields(events, fields, 4, lists, "columns") < 0) {
        return NULL;
    }
    return Py_BuildValue("(NNNN)", lists[0], lists[1], lists[2], lists[3]);
}

/* payloads(events) -> list: the payload of each event, in one C loop (what
 * list(map(itemgetter(1), events)) builds, without a call per event). */
static PyObject *
payloads(PyObject *module, PyObject *events)
{
    static const Py_ssize_t fields[1] = {PAYLOAD};
    PyObject *list = NULL;
    if (take_fields(events, fields, 1, &list, "payloads") < 0) {
        return NULL;
    }
    return list;
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

/* An event type's instances always hold EVENT_FIELDS items: the field descriptors
 * below read them at fixed offsets, so no instance of another size may exist. */
static PyObject *
fixed_size_alloc(PyTypeObject *type, Py_ssize_t nitems)
{
    if (nitems != EVENT_FIELDS) {
        PyErr_Format(PyExc_TypeError, "%s holds exactly %d fields, not %zd", type->tp_name,
                     EVENT_FIELDS, nitems);
        return NULL;
    }
    return PyType_GenericAlloc(type, nitems);
}

/* tuple_fields(type, fields) -> None
 *     Make `type` (a tuple subclass) hold exactly EVENT_FIELDS items, and give it a
 *     read-only attribute per (name, doc) of `fields`, reading item i. These are member
 *     descriptors, like those of __slots__ (which a tuple subclass cannot have), so
 *     CPython's attribute cache specialises `event.id` to a load at a fixed offset,
 *     where a property or _tuplegetter takes a descriptor call. With no fields, only
 *     the size is fixed (what a subclass of the event type needs). */
static PyObject *
tuple_fields(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyType_Check(args[0]) || !PyTuple_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "tuple_fields(type, fields: tuple)");
        return NULL;
    }
    PyTypeObject *type = (PyTypeObject *)args[0];
    PyObject *fields = args[1];
    Py_ssize_t n = PyTuple_GET_SIZE(fields);
    if (!PyType_IsSubtype(type, &PyTuple_Type) || !(type->tp_flags & Py_TPFLAGS_HEAPTYPE)
        || type->tp_itemsize != sizeof(PyObject *)) {
        PyErr_SetString(PyExc_TypeError, "tuple_fields(): type must be a tuple subclass");
        return NULL;
    }
    if (n > EVENT_FIELDS) {
        PyErr_Format(PyExc_ValueError, "tuple_fields(): at most %d fields", EVENT_FIELDS);
        return NULL;
    }
    /* the definitions outlive the descriptors that point at them: a type lives until
     * the interpreter ends, and this is called once per type, at its creation */
    PyMemberDef *defs = n ? PyMem_Calloc(n, sizeof(PyMemberDef)) : NULL;
    if (n && defs == NULL) {
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = PyTuple_GET_ITEM(fields, i);
        const char *name, *doc;
        if (!PyArg_ParseTuple(pair, "ss", &name, &doc)) {
            return NULL;  /* defs stay allocated: a few bytes, on an error path only */
        }
        char *name_copy = PyMem_Malloc(strlen(name) + 1);
        char *doc_copy = PyMem_Malloc(strlen(doc) + 1);
        if (name_copy == NULL || doc_copy == NULL) {
            return PyErr_NoMemory();
        }
        strcpy(name_copy, name);
        strcpy(doc_copy, doc);
        defs[i].name = name_copy;
        defs[i].type = T_OBJECT_EX;
        defs[i].offset = offsetof(PyTupleObject, ob_item) + i * sizeof(PyObject *);
        defs[i].flags = READONLY;
        defs[i].doc = doc_copy;
    }
    type->tp_alloc = fixed_size_alloc;  /* before any descriptor can be reached */
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *descr = PyDescr_NewMember(type, &defs[i]);
        if (descr == NULL) {
            return NULL;
        }
        int failed = PyObject_SetAttrString((PyObject *)type, defs[i].name, descr);
        Py_DECREF(descr);
        if (failed) {
            return NULL;
        }
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"payloads", (PyCFunction)payloads, METH_O,
     "payloads(events) -> the payload of each event"},
    {"tuple_fields", (PyCFunction)(void (*)(void))tuple_fields, METH_FASTCALL,
     "tuple_fields(type, fields) -> None: fixed-size tuple type with fast field attributes"},
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
