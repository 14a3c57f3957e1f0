// A small C API over toml++ so Swift never sees C++ types or exceptions: parse a buffer
// into a read-only document, then walk tables, arrays and scalar values with their
// source positions. It does not validate any schema; the inventory loader does that.
#ifndef CTOML_H
#define CTOML_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// A parsed document; owns every node and string handed out for it.
typedef struct ctoml_doc ctoml_doc;

/// A node inside a document; valid until the document is freed.
typedef struct ctoml_node ctoml_node;

typedef enum ctoml_kind {
    CTOML_NONE = 0,
    CTOML_TABLE,
    CTOML_ARRAY,
    CTOML_STRING,
    CTOML_INTEGER,
    CTOML_FLOAT,
    CTOML_BOOL,
    CTOML_DATE,
    CTOML_TIME,
    CTOML_DATE_TIME
} ctoml_kind;

/// Where the parse failed. `message` is malloc'd (free with ctoml_free_string) and
/// never NULL when ctoml_parse returns NULL; line and column are 1-based, 0 if unknown.
typedef struct ctoml_error {
    char *message;
    long line;
    long column;
} ctoml_error;

/// One key of a table: the key text (owned by the document, `key_length` bytes, may
/// hold NUL bytes from escapes), where the key was written, and its value.
typedef struct ctoml_entry {
    const char *key;
    size_t key_length;
    long line;
    long column;
    const ctoml_node *value;
} ctoml_entry;

/// Parses `length` bytes. Returns NULL and fills `error` on any failure (syntax error,
/// invalid UTF-8, out of memory); never throws.
ctoml_doc *ctoml_parse(const char *data, size_t length, ctoml_error *error);

void ctoml_free(ctoml_doc *doc);
void ctoml_free_string(char *text);

/// The root table.
const ctoml_node *ctoml_root(const ctoml_doc *doc);

ctoml_kind ctoml_node_kind(const ctoml_node *node);

/// Where the node's value starts (1-based; 0 for nodes the parser made implicitly).
void ctoml_node_position(const ctoml_node *node, long *line, long *column);

/// Number of keys in a table (0 for other kinds).
size_t ctoml_table_count(const ctoml_node *node);

/// Fills up to `capacity` entries of a table, in the table's own (sorted) order;
/// returns how many were written.
size_t ctoml_table_entries(const ctoml_node *node, ctoml_entry *entries, size_t capacity);

/// Number of elements of an array (0 for other kinds) and one element by index
/// (NULL when out of range).
size_t ctoml_array_count(const ctoml_node *node);
const ctoml_node *ctoml_array_at(const ctoml_node *node, size_t index);

/// A string's bytes (owned by the document) and length; NULL if not a string.
const char *ctoml_string(const ctoml_node *node, size_t *length);

/// Scalar getters; return 0 (false) when the node is of another kind.
int ctoml_integer(const ctoml_node *node, int64_t *value);
int ctoml_float(const ctoml_node *node, double *value);
int ctoml_bool(const ctoml_node *node, int *value);

/// A date, time or date-time as TOML text (e.g. `1979-05-27T07:32:00Z`); malloc'd,
/// free with ctoml_free_string. NULL for other kinds or when memory runs out.
char *ctoml_date_time_text(const ctoml_node *node);

#ifdef __cplusplus
}
#endif

#endif
