// The C side of the toml++ wrapper declared in ctoml.h. Every entry point catches all
// exceptions: a C++ exception unwinding into Swift aborts the process. Nothing here
// interprets the document beyond handing out its nodes.
#include "ctoml.h"

#include <toml++/toml.h>

#include <cctype>
#include <cstdlib>
#include <cstring>
#include <new>
#include <sstream>
#include <string>

struct ctoml_doc {
    toml::table root;
};

namespace {

const toml::node *as_node(const ctoml_node *node) {
    return reinterpret_cast<const toml::node *>(node);
}

const ctoml_node *as_handle(const toml::node *node) {
    return reinterpret_cast<const ctoml_node *>(node);
}

// malloc'd copy so Swift can free it with the C allocator; NULL if memory runs out.
char *copy_string(const std::string &text) {
    char *out = static_cast<char *>(std::malloc(text.size() + 1));
    if (out != nullptr) {
        std::memcpy(out, text.data(), text.size());
        out[text.size()] = '\0';
    }
    return out;
}

void set_error(ctoml_error *error, const std::string &message, long line, long column) {
    if (error == nullptr) {
        return;
    }
    error->message = copy_string(message);
    error->line = line;
    error->column = column;
}

// toml++ recurses once per nesting level while parsing and freeing, and dotted keys
// (`a.a.a.… = 1`) nest without its own limit: 50000 levels overflowed an 8 MiB stack
// here. This scan refuses deep documents before toml++ sees them. It tracks strings
// and comments only well enough to skip them; toml++ still judges the syntax.
constexpr int max_dotted_parts = 32;
constexpr int max_open_brackets = 16;

bool too_deep(std::string_view text, ctoml_error *error) {
    long line = 1;
    long column = 1;
    int dots = 0;      // dots in the current run of key parts
    int brackets = 0;  // '[' and '{' not yet closed
    size_t i = 0;
    auto advance = [&](size_t count) {
        for (size_t k = 0; k < count && i < text.size(); ++k, ++i) {
            if (text[i] == '\n') {
                ++line;
                column = 1;
            } else if ((static_cast<unsigned char>(text[i]) & 0xC0) != 0x80) {
                ++column;  // count code points, like toml++ does
            }
        }
    };
    auto refuse = [&](const char *message) {
        set_error(error, message, line, column);
        return true;
    };
    while (i < text.size()) {
        char c = text[i];
        if (c == '#') {
            while (i < text.size() && text[i] != '\n') {
                advance(1);
            }
        } else if (c == '"' || c == '\'') {
            // Four cases: basic "..." (with escapes), literal '...', and their
            // triple-quoted multi-line forms. A string continues a dotted key run.
            bool triple = text.substr(i, 3) == std::string_view(c == '"' ? "\"\"\"" : "'''");
            advance(triple ? 3 : 1);
            while (i < text.size()) {
                if (c == '"' && text[i] == '\\') {
                    advance(2);
                } else if (triple ? text.substr(i, 3) ==
                                        std::string_view(c == '"' ? "\"\"\"" : "'''")
                                  : text[i] == c) {
                    advance(triple ? 3 : 1);
                    break;
                } else if (!triple && text[i] == '\n') {
                    break;  // unterminated; toml++ reports it
                } else {
                    advance(1);
                }
            }
        } else if (c == '.') {
            if (++dots >= max_dotted_parts) {
                return refuse("a key has more than 32 dotted parts");
            }
            advance(1);
        } else if (c == '[' || c == '{') {
            if (++brackets > max_open_brackets) {
                return refuse("arrays and tables nest more than 16 levels deep");
            }
            dots = 0;
            advance(1);
        } else if (c == ']' || c == '}') {
            brackets = brackets > 0 ? brackets - 1 : 0;
            dots = 0;
            advance(1);
        } else if (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' ||
                   c == ' ' || c == '\t') {
            advance(1);  // bare key characters and spacing keep the run going
        } else {
            dots = 0;
            advance(1);
        }
    }
    return false;
}

}  // namespace

extern "C" ctoml_doc *ctoml_parse(const char *data, size_t length, ctoml_error *error) {
    if (error != nullptr) {
        error->message = nullptr;
        error->line = 0;
        error->column = 0;
    }
    try {
        std::string_view text(data == nullptr ? "" : data, data == nullptr ? 0 : length);
        if (too_deep(text, error)) {
            return nullptr;
        }
        auto *doc = new ctoml_doc{toml::parse(text)};
        return doc;
    } catch (const toml::parse_error &failure) {
        const auto &begin = failure.source().begin;
        set_error(error, std::string(failure.description()),
                  static_cast<long>(begin.line), static_cast<long>(begin.column));
    } catch (const std::bad_alloc &) {
        set_error(error, "out of memory while parsing", 0, 0);
    } catch (const std::exception &failure) {
        set_error(error, failure.what(), 0, 0);
    } catch (...) {
        set_error(error, "unknown error while parsing", 0, 0);
    }
    return nullptr;
}

extern "C" void ctoml_free(ctoml_doc *doc) {
    try {
        delete doc;
    } catch (...) {
        // Destructors of toml++ nodes do not throw; this only keeps the promise above.
    }
}

extern "C" void ctoml_free_string(char *text) { std::free(text); }

extern "C" const ctoml_node *ctoml_root(const ctoml_doc *doc) {
    return doc == nullptr ? nullptr : as_handle(&doc->root);
}

extern "C" ctoml_kind ctoml_node_kind(const ctoml_node *handle) {
    const toml::node *node = as_node(handle);
    if (node == nullptr) {
        return CTOML_NONE;
    }
    switch (node->type()) {
    case toml::node_type::table: return CTOML_TABLE;
    case toml::node_type::array: return CTOML_ARRAY;
    case toml::node_type::string: return CTOML_STRING;
    case toml::node_type::integer: return CTOML_INTEGER;
    case toml::node_type::floating_point: return CTOML_FLOAT;
    case toml::node_type::boolean: return CTOML_BOOL;
    case toml::node_type::date: return CTOML_DATE;
    case toml::node_type::time: return CTOML_TIME;
    case toml::node_type::date_time: return CTOML_DATE_TIME;
    default: return CTOML_NONE;
    }
}

extern "C" void ctoml_node_position(const ctoml_node *handle, long *line, long *column) {
    const toml::node *node = as_node(handle);
    long l = 0;
    long c = 0;
    if (node != nullptr) {
        l = static_cast<long>(node->source().begin.line);
        c = static_cast<long>(node->source().begin.column);
    }
    if (line != nullptr) {
        *line = l;
    }
    if (column != nullptr) {
        *column = c;
    }
}

extern "C" size_t ctoml_table_count(const ctoml_node *handle) {
    const toml::node *node = as_node(handle);
    const toml::table *table = node == nullptr ? nullptr : node->as_table();
    return table == nullptr ? 0 : table->size();
}

extern "C" size_t ctoml_table_entries(const ctoml_node *handle, ctoml_entry *entries,
                                      size_t capacity) {
    const toml::node *node = as_node(handle);
    const toml::table *table = node == nullptr ? nullptr : node->as_table();
    if (table == nullptr || entries == nullptr) {
        return 0;
    }
    size_t written = 0;
    for (auto &&[key, value] : *table) {
        if (written == capacity) {
            break;
        }
        ctoml_entry &entry = entries[written++];
        entry.key = key.str().data();
        entry.key_length = key.str().size();
        entry.line = static_cast<long>(key.source().begin.line);
        entry.column = static_cast<long>(key.source().begin.column);
        entry.value = as_handle(&value);
    }
    return written;
}

extern "C" size_t ctoml_array_count(const ctoml_node *handle) {
    const toml::node *node = as_node(handle);
    const toml::array *array = node == nullptr ? nullptr : node->as_array();
    return array == nullptr ? 0 : array->size();
}

extern "C" const ctoml_node *ctoml_array_at(const ctoml_node *handle, size_t index) {
    const toml::node *node = as_node(handle);
    const toml::array *array = node == nullptr ? nullptr : node->as_array();
    if (array == nullptr || index >= array->size()) {
        return nullptr;
    }
    return as_handle(array->get(index));
}

extern "C" const char *ctoml_string(const ctoml_node *handle, size_t *length) {
    const toml::node *node = as_node(handle);
    const toml::value<std::string> *value = node == nullptr ? nullptr : node->as_string();
    if (value == nullptr) {
        return nullptr;
    }
    if (length != nullptr) {
        *length = value->get().size();
    }
    return value->get().data();
}

namespace {

// The scalar getters below: 1 and the value in `out` when the node holds a T, else 0.
template <typename T, typename Out> int scalar(const ctoml_node *handle, Out *out) {
    const toml::node *node = as_node(handle);
    const toml::value<T> *value = node == nullptr ? nullptr : node->as<T>();
    if (value == nullptr || out == nullptr) {
        return 0;
    }
    *out = static_cast<Out>(value->get());
    return 1;
}

}  // namespace

extern "C" int ctoml_integer(const ctoml_node *handle, int64_t *out) {
    return scalar<int64_t>(handle, out);
}

extern "C" int ctoml_float(const ctoml_node *handle, double *out) {
    return scalar<double>(handle, out);
}

extern "C" int ctoml_bool(const ctoml_node *handle, int *out) {
    return scalar<bool>(handle, out);
}

extern "C" char *ctoml_date_time_text(const ctoml_node *handle) {
    const toml::node *node = as_node(handle);
    if (node == nullptr) {
        return nullptr;
    }
    try {
        std::ostringstream text;
        if (auto *date = node->as_date()) {
            text << date->get();
        } else if (auto *time = node->as_time()) {
            text << time->get();
        } else if (auto *date_time = node->as_date_time()) {
            text << date_time->get();
        } else {
            return nullptr;
        }
        return copy_string(text.str());
    } catch (...) {
        return nullptr;
    }
}
