// bridge/config.cpp — load_config(): one TOML file in, a checked Config out.
//
// The document is parsed by toml++, then walked once, table by table, in a
// fixed order ([node], [security], [control], [metrics], [limits], [log],
// [[peer]], [[topic]], [[queue]], [locks], [[lock_backend]], [[kafka]],
// [[rabbitmq]], [[link]]). The first problem found is thrown as a
// ConfigError that already holds the finished "PATH:LINE: KEY: what" text,
// and load_config() turns it into the one Error it returns: the checks then
// read top to bottom without an error path after every call.
//
// Within a table, unknown keys are checked before anything else, because a
// misspelt key would otherwise surface as a confusing "missing" one.
#include "config.hpp"

#include <arpa/inet.h>  // inet_pton: metrics.address
#include <fcntl.h>      // open
#include <sys/stat.h>   // fstat: regular files only
#include <sys/un.h>     // sockaddr_un: the longest control socket path
#include <unistd.h>     // read, close

#include <algorithm>         // std::min_element
#include <cctype>            // std::isalnum: lock name prefixes
#include <cerrno>            // errno after open/read
#include <cstdint>           // UINT32_MAX
#include <charconv>          // std::from_chars: endpoint ports
#include <cstdio>            // std::sscanf: a mirror's key
#include <cstring>           // std::strerror
#include <initializer_list>  // the known keys of a table
#include <map>               // names declared so far
#include <optional>          // keys that may be absent
#include <string_view>
#include <toml++/toml.h>

#include "colo/internal/ring_limits.hpp"  // the ring's own rules, so that a config that loads can be created
#include "colo/internal/text.hpp"         // escaped: values from the file in messages
#include "colo/names.hpp"                 // validate_namespace, validate_object_name, default_control_socket
#include "links/kafka/kafka_client.hpp"   // librdkafka's own check of a property

namespace colo::bridge {
namespace {

// ----------------------------------------------------------------- values

// The Z85 alphabet (ZeroMQ RFC 32), in digit order.
constexpr std::string_view kZ85Alphabet =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
constexpr std::size_t kZ85KeyChars = 40;  // a 32-byte CURVE key

// A CURVE key as ZeroMQ writes it: 40 characters of the alphabet, each group
// of 5 encoding 4 bytes (so a group must not exceed 2^32 - 1, which "%%%%%"
// would: libzmq refuses such a key only when the daemon starts).
bool is_z85_key(std::string_view key) {
  if (key.size() != kZ85KeyChars) return false;
  for (std::size_t group = 0; group < key.size(); group += 5) {
    std::uint64_t value = 0;
    for (std::size_t i = group; i < group + 5; ++i) {
      const auto digit = kZ85Alphabet.find(key[i]);
      if (digit == std::string_view::npos) return false;
      value = value * 85 + digit;
    }
    if (value > 0xffff'ffffu) return false;
  }
  return true;
}

// A value from the file, as it may be quoted in a message: non-printable
// bytes and quotes escaped, long values cut (the message goes to a log).
std::string quoted(std::string_view s) { return "'" + internal::escaped(s, 100) + "'"; }

// Node names travel in every federation frame and in logs; they are not
// object names (no '/').
bool is_node_name(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (unsigned char c : name) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
                    c == '-' || c == '.';
    if (!ok) return false;
  }
  return true;
}

// The longest path of a Unix socket (ipc:// endpoints, the control socket).
constexpr std::size_t kMaxSocketPath = sizeof(sockaddr_un::sun_path) - 1;

// What is wrong with "HOST:PORT", as a fragment to append to a message
// (" (no :PORT)", ": port 'x' is not 1-65535"), or nothing.
std::optional<std::string> host_port_problem(std::string_view text) {
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos) return " (no :PORT)";
  const std::string_view host = text.substr(0, colon), port = text.substr(colon + 1);
  if (host.empty()) return " (the host is empty)";
  for (unsigned char c : host)
    if (c <= 0x20 || c >= 0x7f || c == '/' || c == ',') return " (the host has a space, '/', ',' or a non-ASCII byte)";
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc() || end != port.data() + port.size() || value < 1 || value > 65535)
    return ": port " + quoted(port) + " is not 1-65535";
  return std::nullopt;
}

// What is wrong with a ZeroMQ endpoint, or nothing. `peer`: one we connect
// to, so "*" (any interface) is no host.
std::optional<std::string> endpoint_problem(std::string_view endpoint, bool peer) {
  const std::string shape = quoted(endpoint) + " is not tcp://HOST:PORT or ipc://PATH";
  if (endpoint.starts_with("ipc://")) {
    const std::string_view path = endpoint.substr(6);
    if (path.empty()) return shape + " (the path is empty)";
    if (path.size() > kMaxSocketPath)
      return quoted(endpoint) + ": its path is " + std::to_string(path.size()) +
             " bytes; a Unix socket's path has at most " + std::to_string(kMaxSocketPath);
    return std::nullopt;
  }
  if (!endpoint.starts_with("tcp://")) return shape;
  const std::string_view rest = endpoint.substr(6);
  if (auto problem = host_port_problem(rest)) {
    if (problem->starts_with(": port "))
      return "port " + quoted(rest.substr(rest.rfind(':') + 1)) + " of " + quoted(endpoint) + " is not 1-65535";
    return shape + *problem;
  }
  if (peer && rest.starts_with("*:"))
    return quoted(endpoint) + ": a peer needs a host to connect to; '*' is for listen";
  return std::nullopt;
}

// A lock backend's "HOST:PORT[,HOST:PORT...]" (ZooKeeper: a "/chroot" may
// follow the last): what is wrong, or nothing.
std::optional<std::string> host_list_problem(std::string_view text, bool several, bool chroot) {
  std::string_view list = text;
  if (chroot)
    if (const auto slash = list.find('/'); slash != std::string_view::npos) list = list.substr(0, slash);
  std::size_t items = 0;
  for (std::size_t start = 0; start <= list.size();) {
    std::size_t comma = list.find(',', start);
    if (comma == std::string_view::npos) comma = list.size();
    const std::string_view item = list.substr(start, comma - start);
    ++items;
    if (item.empty()) return quoted(text) + " has an empty HOST:PORT (between commas, or at an end)";
    if (auto problem = host_port_problem(item)) {
      if (problem->starts_with(": port ")) return quoted(item) + *problem + " (in " + quoted(text) + ")";
      return quoted(item) + " is not HOST:PORT" + *problem + " (in " + quoted(text) + ")";
    }
    start = comma + 1;
  }
  if (!several && items > 1) return quoted(text) + " is not one HOST:PORT";
  return std::nullopt;
}

// tcp:// endpoints: host and port ("*" and "0.0.0.0" are every address).
struct TcpEndpoint {
  std::string host, port;
};
std::optional<TcpEndpoint> tcp_endpoint(std::string_view endpoint) {
  if (!endpoint.starts_with("tcp://")) return std::nullopt;
  const std::string_view rest = endpoint.substr(6);
  const auto colon = rest.rfind(':');
  if (colon == std::string_view::npos) return std::nullopt;
  return TcpEndpoint{std::string(rest.substr(0, colon)), std::string(rest.substr(colon + 1))};
}

bool is_loopback_host(std::string_view host) {
  return host == "localhost" || host == "::1" || host == "[::1]" || host.starts_with("127.");
}
bool is_any_host(std::string_view host) { return host == "*" || host == "0.0.0.0" || host == "::" || host == "[::]"; }

// Would a connection to `peer` reach our own `listen` endpoint? (The same
// endpoint, or our port on loopback when we listen on every address.)
bool reaches_us(std::string_view listen, std::string_view peer) {
  if (listen == peer) return true;
  const auto l = tcp_endpoint(listen), p = tcp_endpoint(peer);
  if (!l || !p || l->port != p->port) return false;
  const auto local = [](std::string_view h) { return h == "localhost" || h == "127.0.0.1"; };
  return l->host == p->host || (is_any_host(l->host) && is_loopback_host(p->host)) ||
         (local(l->host) && local(p->host));
}

const char* type_name(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a floating-point number";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    case toml::node_type::date: return "a date";
    case toml::node_type::time: return "a time";
    case toml::node_type::date_time: return "a date-time";
    case toml::node_type::none: break;
  }
  return "nothing";
}

// ---------------------------------------------------------------- reading

struct ConfigError {
  std::string message;
};

// The file being read: where messages point.
class Source {
 public:
  explicit Source(std::string path) : path_(std::move(path)) {}
  const std::string& path() const { return path_; }

  // "PATH:LINE: KEY: what", LINE from `at` (omitted when at is null).
  [[noreturn]] void fail(const toml::node* at, const std::string& key, const std::string& what) const {
    std::string where = path_;
    if (at != nullptr && at->source().begin.line != 0) where += ":" + std::to_string(at->source().begin.line);
    throw ConfigError{where + ": " + key + ": " + what};
  }

 private:
  std::string path_;
};

// One table of the file and the name its keys are reported under:
// Section(src, t, "node") reports "node.listen", Section(src, t, "peer[1]")
// "peer[1].endpoint". `header` is how the table is written in the file
// ("[node]", "[[peer]]"), for "unknown key" messages.
class Section {
 public:
  Section(const Source& src, const toml::table& table, std::string name, std::string header, bool has_line = true)
      : src_(src), table_(table), name_(std::move(name)), header_(std::move(header)), has_line_(has_line) {}

  std::string key(std::string_view k) const { return name_.empty() ? std::string(k) : name_ + "." + std::string(k); }
  const toml::node* node(std::string_view k) const { return table_.get(k); }

  // At the line of key k (or, if it is absent, of the table).
  [[noreturn]] void fail(std::string_view k, const std::string& what) const {
    const toml::node* at = node(k);
    src_.fail(at != nullptr ? at : table_line(), key(k), what);
  }
  [[noreturn]] void missing(std::string_view k, const std::string& why = "") const {
    src_.fail(table_line(), key(k), "missing" + why);
  }

  // Every key of the table must be one of `known`: a typo must not be
  // silently ignored. Of several unknown keys, the earliest in the file.
  void only(std::initializer_list<std::string_view> known) const {
    const toml::node* first = nullptr;
    std::string_view first_key;
    for (const auto& [k, value] : table_) {
      if (std::find(known.begin(), known.end(), k.str()) != known.end()) continue;
      if (first == nullptr || value.source().begin < first->source().begin) {
        first = &value;
        first_key = k.str();
      }
    }
    if (first == nullptr) return;
    std::string list;
    for (std::string_view k : known) list += (list.empty() ? "" : ", ") + std::string(k);
    src_.fail(first, key(first_key), "unknown key " + quoted(first_key) + " in " + header_ + " (known: " + list + ")");
  }

  std::optional<std::string> string(std::string_view k) const {
    const toml::node* n = node(k);
    if (n == nullptr) return std::nullopt;
    if (!n->is_string()) fail(k, std::string("expected a string, found ") + type_name(*n));
    return std::string(n->as_string()->get());
  }
  std::string required_string(std::string_view k) const {
    auto s = string(k);
    if (!s) missing(k);
    return *s;
  }

  std::optional<bool> boolean(std::string_view k) const {
    const toml::node* n = node(k);
    if (n == nullptr) return std::nullopt;
    if (!n->is_boolean()) fail(k, std::string("expected true or false, found ") + type_name(*n));
    return n->as_boolean()->get();
  }

  // An integer in lo..hi.
  std::optional<std::int64_t> integer(std::string_view k, std::int64_t lo, std::int64_t hi) const {
    const toml::node* n = node(k);
    if (n == nullptr) return std::nullopt;
    if (!n->is_integer()) fail(k, std::string("expected an integer, found ") + type_name(*n));
    const std::int64_t v = n->as_integer()->get();
    if (v < lo || v > hi) fail(k, std::to_string(v) + " is outside " + std::to_string(lo) + ".." + std::to_string(hi));
    return v;
  }

 private:
  // The root table has no header line of its own.
  const toml::node* table_line() const { return has_line_ ? &table_ : nullptr; }

  const Source& src_;
  const toml::table& table_;
  std::string name_, header_;
  bool has_line_;
};

// [name] in the root: absent, or a table.
const toml::table* sub_table(const Section& root, std::string_view name) {
  const toml::node* n = root.node(name);
  if (n == nullptr) return nullptr;
  if (!n->is_table())
    root.fail(name, "expected a table [" + std::string(name) + "], found " + type_name(*n));
  return n->as_table();
}

// [[name]] in the root: absent (none), or an array of tables.
std::vector<const toml::table*> table_array(const Section& root, std::string_view name) {
  std::vector<const toml::table*> out;
  const toml::node* n = root.node(name);
  if (n == nullptr) return out;
  const toml::array* array = n->as_array();
  if (array == nullptr || (!array->empty() && !array->is_array_of_tables()))
    root.fail(name, "expected [[" + std::string(name) + "]] tables, found " + type_name(*n) +
                        (n->is_table() ? " (write [[" + std::string(name) + "]], with two brackets)" : ""));
  for (const auto& item : *array) out.push_back(item.as_table());
  return out;
}

// A regular file's first bytes, at most `limit`; the error says why not.
struct FileText {
  std::string text;
  int error = 0;        // errno of open/read, or 0
  bool regular = true;  // false: a directory, device, FIFO...
  bool too_large = false;
};
FileText read_small_file(const std::string& path, std::size_t limit) {
  FileText out;
  // O_NONBLOCK: a FIFO must not hang the loader; it is refused below.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) {
    out.error = errno;
    return out;
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    out.error = errno;
  } else if (!S_ISREG(st.st_mode)) {
    out.regular = false;
  } else if (static_cast<std::uint64_t>(st.st_size) > limit) {
    out.too_large = true;
  } else {
    char buf[4096];
    for (;;) {
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) out.error = errno;
      if (n <= 0) break;
      out.text.append(buf, static_cast<std::size_t>(n));
      if (out.text.size() > limit) {
        out.too_large = true;
        break;
      }
    }
  }
  ::close(fd);
  return out;
}

std::string_view trimmed(std::string_view s) {
  constexpr std::string_view kSpace = " \t\r\n\v\f";
  const auto first = s.find_first_not_of(kSpace);
  if (first == std::string_view::npos) return {};
  return s.substr(first, s.find_last_not_of(kSpace) - first + 1);
}

// -------------------------------------------------------------- the rules

// capacity and max_message of a [[topic]] or [[queue]], checked by the
// ring's own rules (colo/internal/ring_limits.hpp), worded for the file.
void read_ring(const Section& s, std::uint64_t& capacity, std::uint32_t& max_message) {
  const auto range = internal::ring_capacity_range();
  if (auto v = s.integer("capacity", static_cast<std::int64_t>(range.min), static_cast<std::int64_t>(range.max))) {
    // Within the range, what the ring refuses is a capacity not a power of two.
    if (!internal::largest_max_message(static_cast<std::uint64_t>(*v)))
      s.fail("capacity", std::to_string(*v) + " is not a power of two");
    capacity = static_cast<std::uint64_t>(*v);
  }
  // The largest any ring takes: the largest ring's.
  const std::uint32_t limit = internal::largest_max_message(range.max).value_or(0);
  if (auto v = s.integer("max_message", 1, limit)) max_message = static_cast<std::uint32_t>(*v);
  const std::uint32_t largest = internal::largest_max_message(capacity).value_or(0);
  if (max_message > largest) {
    const std::string what = std::to_string(max_message) + " bytes do not fit twice in a ring of " +
                             std::to_string(capacity) + " bytes (at most " + std::to_string(largest) +
                             "; raise capacity or lower max_message)";
    // Name the key the file set; if it set only capacity, the default
    // max_message is what does not fit.
    if (s.node("max_message") == nullptr && s.node("capacity") != nullptr)
      s.fail("capacity", "the default max_message of " + what);
    s.fail("max_message", what);
  }
}

// A [[topic]]'s or [[queue]]'s largest message must fit in a federation
// frame: a larger frame makes the receiving ZeroMQ drop the connection, and
// the sender would resend it forever.
void check_frame_fits(const Section& s, std::uint32_t max_message, std::uint32_t max_frame) {
  const std::size_t needed = kFrameOverhead + max_message;
  if (needed <= max_frame) return;
  s.fail("max_message", std::to_string(max_message) + " bytes do not fit in a federation frame of [limits] max_frame = " +
                            std::to_string(max_frame) + " bytes (a frame adds up to " + std::to_string(kFrameOverhead) +
                            "): raise max_frame to at least " + std::to_string(needed) + ", or lower max_message");
}

// What is wrong with the control socket's path, as far as the file tells
// (its directory is checked when colod starts: it must be colod's own).
std::optional<std::string> control_socket_problem(const std::string& path) {
  if (path.empty() || path.front() != '/' || path.size() > kMaxSocketPath)
    return quoted(path) + " is not an absolute path of at most " + std::to_string(kMaxSocketPath) + " bytes";
  const std::string name = path.substr(path.rfind('/') + 1);
  if (name.empty() || name == "." || name == "..")
    return quoted(path) + " names a directory; give the socket's file (e.g. /run/colo/NS/colod.sock)";
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0 && !S_ISSOCK(st.st_mode))
    return quoted(path) + " exists and is not a socket: colod never replaces another file";
  return std::nullopt;
}

// Where a name was first declared: for "declared twice" messages.
struct Declared {
  std::string key;  // "topic[0].name"
  std::int64_t line = 0;
};
std::string where(const Declared& d) {
  return d.key + (d.line != 0 ? " (line " + std::to_string(d.line) + ")" : "");
}
std::int64_t line_of(const toml::node* n) { return n != nullptr ? n->source().begin.line : 0; }

std::string directory_of(const std::string& path) {
  const auto slash = path.rfind('/');
  return slash == std::string::npos ? std::string() : path.substr(0, slash + 1);
}

// A table-valued key of a table (`[link.kafka]` or `kafka = { ... }`):
// absent, or a table.
const toml::table* sub_table_of(const Section& s, std::string_view key) {
  const toml::node* n = s.node(key);
  if (n == nullptr) return nullptr;
  if (!n->is_table()) s.fail(key, std::string("expected a table, found ") + type_name(*n));
  return n->as_table();
}

// A property value as librdkafka takes it: text.
std::string property_text(const Section& s, std::string_view key, const toml::node& value) {
  if (const auto* text = value.as_string()) return text->get();
  if (const auto* integer = value.as_integer()) return std::to_string(integer->get());
  if (const auto* boolean = value.as_boolean()) return boolean->get() ? "true" : "false";
  if (value.is_table())  // security.protocol = "SSL" unquoted is a table `security` in TOML
    s.fail(key, "a table: quote a property name that has dots (\"" + std::string(key) + ".name\" = \"value\")");
  s.fail(key, std::string("expected a string, an integer or a boolean, found ") + type_name(value));
}

// Kafka's own rule for topic names (kafka.common.internals.Topic).
bool is_kafka_topic(std::string_view name) {
  if (name.empty() || name.size() > 249 || name == "." || name == "..") return false;
  return std::all_of(name.begin(), name.end(), [](unsigned char c) {
    return std::isalnum(c) != 0 || c == '.' || c == '_' || c == '-';
  });
}

// [[kafka]]: clusters, by name. Every property is set on a librdkafka
// configuration now, so that one it refuses (a misspelt name, a bad value)
// fails --check-config, not the link at run time.
void read_kafka_clusters(const Source& src, const Section& root, Config& c) {
  std::map<std::string, Declared> names;
  std::size_t index = 0;
  for (const toml::table* t : table_array(root, "kafka")) {
    const Section kafka(src, *t, "kafka[" + std::to_string(index++) + "]", "[[kafka]]");
    kafka.only({"name", "bootstrap", "properties"});
    KafkaClusterConfig k;
    k.name = kafka.required_string("name");
    if (!is_node_name(k.name)) kafka.fail("name", quoted(k.name) + " is not 1-64 bytes of A-Z a-z 0-9 _ - .");
    const Declared here{kafka.key("name"), line_of(kafka.node("name"))};
    if (auto [it, fresh] = names.emplace(k.name, here); !fresh)
      kafka.fail("name", quoted(k.name) + " is already the name of " + where(it->second));
    k.bootstrap = kafka.required_string("bootstrap");
    if (k.bootstrap.empty() || k.bootstrap.size() > 4096 ||
        std::any_of(k.bootstrap.begin(), k.bootstrap.end(), [](unsigned char ch) { return ch <= 0x20 || ch >= 0x7f; }))
      kafka.fail("bootstrap", quoted(k.bootstrap) + " is not HOST:PORT[,HOST:PORT...] (1-4096 bytes, no spaces)");
    if (auto problem = kafka::property_problem("bootstrap.servers", k.bootstrap))
      kafka.fail("bootstrap", *problem);
    if (const toml::table* properties = sub_table_of(kafka, "properties")) {
      const Section props(src, *properties, kafka.key("properties"), "[kafka.properties]");
      for (const auto& [key, value] : *properties) {
        const std::string name(key.str());
        if (auto reason = kafka::reserved_property(name))
          props.fail(name, quoted(name) + " is set by colod: " + *reason);
        const std::string text = property_text(props, name, value);
        if (auto problem = kafka::property_problem(name, text)) props.fail(name, *problem);
        k.properties.emplace_back(name, text);
      }
    }
    c.kafka_clusters.push_back(std::move(k));
  }
}

// The object a link serves, checked against [[topic]] and [[queue]]: kind,
// and ring parameters (the link's own only if no table declares the object).
void read_link_object(const Section& link, const Config& c, LinkConfig& l) {
  l.object = link.required_string("object");
  if (auto ok = validate_object_name(l.object); !ok) link.fail("object", ok.error().message);
  if (auto kind = link.string("kind")) {
    if (*kind != "topic" && *kind != "queue") link.fail("kind", quoted(*kind) + " is not topic or queue");
    l.kind = *kind == "queue" ? ObjectKind::queue : ObjectKind::topic;
  } else {
    link.missing("kind", " (topic or queue: the kind of object '" + l.object + "')");
  }
  const TopicConfig* topic = nullptr;
  const QueueConfig* queue = nullptr;
  for (const auto& t : c.topics)
    if (t.name == l.object) topic = &t;
  for (const auto& q : c.queues)
    if (q.name == l.object) queue = &q;
  if ((topic != nullptr && l.kind != ObjectKind::topic) || (queue != nullptr && l.kind != ObjectKind::queue))
    link.fail("kind", "'" + l.object + "' is declared as a " + (topic != nullptr ? "[[topic]]" : "[[queue]]"));
  if (topic != nullptr || queue != nullptr) {
    for (std::string_view k : {"capacity", "max_message", "history", "acks", "max_deliveries"})
      if (link.node(k) != nullptr)
        link.fail(k, "'" + l.object + "' is declared in a [[" + (topic != nullptr ? "topic" : "queue") +
                         "]] table: set its ring there");
    if (topic != nullptr) {
      l.capacity = topic->capacity;
      l.max_message = topic->max_message;
      l.history = topic->history;
    } else {
      l.capacity = queue->capacity;
      l.max_message = queue->max_message;
      l.acks = queue->acks;
      l.max_deliveries = queue->max_deliveries;
    }
    return;
  }
  read_ring(link, l.capacity, l.max_message);
  if (auto h = link.integer("history", 0, UINT32_MAX)) {
    if (l.kind != ObjectKind::topic) link.fail("history", "only a topic has history");
    l.history = static_cast<std::uint32_t>(*h);
  }
  if (auto acks = link.boolean("acks")) {
    if (l.kind != ObjectKind::queue) link.fail("acks", "only a queue has acknowledgements");
    l.acks = *acks;
  }
  if (auto m = link.integer("max_deliveries", 1, 255)) {
    if (l.kind != ObjectKind::queue) link.fail("max_deliveries", "only a queue has deliveries");
    l.max_deliveries = static_cast<std::uint32_t>(*m);
  }
}

// A link's Kafka side: its sub-table `kafka`.
void read_link_kafka(const Source& src, const Section& link, const Config& c, LinkConfig& l) {
  const toml::table* t = sub_table_of(link, "kafka");
  if (t == nullptr)
    link.missing("kafka", " (the system it links to: kafka = { cluster = \"NAME\", topic = \"TOPIC\" }, or "
                          "rabbitmq = { server = \"NAME\", queue = \"QUEUE\" })");
  const Section kafka(src, *t, link.key("kafka"), "[link.kafka]");
  kafka.only({"cluster", "topic", "key", "group", "start", "partitions"});
  l.kafka.cluster = kafka.required_string("cluster");
  if (std::none_of(c.kafka_clusters.begin(), c.kafka_clusters.end(),
                   [&](const KafkaClusterConfig& k) { return k.name == l.kafka.cluster; })) {
    std::string names;
    for (const auto& k : c.kafka_clusters) names += (names.empty() ? "" : ", ") + quoted(k.name);
    kafka.fail("cluster", quoted(l.kafka.cluster) + " is not the name of a [[kafka]] table (" +
                              (names.empty() ? std::string("there is none") : "known: " + names) + ")");
  }
  l.kafka.topic = kafka.string("topic").value_or("");
  if (l.kafka.topic.empty()) {
    l.kafka.topic = l.object;
    std::replace(l.kafka.topic.begin(), l.kafka.topic.end(), '/', '.');
    if (l.mode == LinkMode::spill) l.kafka.topic += ".spill";
  }
  if (!is_kafka_topic(l.kafka.topic))
    kafka.fail("topic", quoted(l.kafka.topic) + " is not a Kafka topic name (1-249 bytes of A-Z a-z 0-9 . _ -)");
  if (auto key = kafka.string("key")) {
    if (l.mode != LinkMode::mirror) kafka.fail("key", "only a mirror keys the records it produces");
    if (*key == "none") {
      l.kafka.key.kind = KafkaKey::Kind::none;
    } else if (*key == "origin") {
      l.kafka.key.kind = KafkaKey::Kind::origin;
    } else {
      // payload:OFFSET:LENGTH
      unsigned offset = 0, length = 0;
      char tail = 0;
      if (std::sscanf(key->c_str(), "payload:%u:%u%c", &offset, &length, &tail) != 2 || length == 0 ||
          !key->starts_with("payload:"))
        kafka.fail("key", quoted(*key) + " is not none, origin or payload:OFFSET:LENGTH");
      if (std::uint64_t{offset} + length > l.max_message)
        kafka.fail("key", "bytes " + std::to_string(offset) + ".." + std::to_string(std::uint64_t{offset} + length) +
                              " lie beyond the object's max_message of " + std::to_string(l.max_message));
      l.kafka.key = {KafkaKey::Kind::payload, offset, length};
    }
  }
  if (auto group = kafka.string("group")) {
    if (l.mode == LinkMode::mirror) kafka.fail("group", "a mirror only produces: it has no consumer group");
    if (group->empty() || group->size() > 255 ||
        std::any_of(group->begin(), group->end(), [](unsigned char ch) { return ch < 0x20 || ch >= 0x7f; }))
      kafka.fail("group", quoted(*group) + " is not 1-255 printable ASCII bytes");
    l.kafka.group = *group;
  } else {
    l.kafka.group = "colo." + c.node_name + "." + l.object + (l.mode == LinkMode::spill ? ".spill" : "");
  }
  if (auto start = kafka.string("start")) {
    if (l.mode != LinkMode::source) kafka.fail("start", "only a source starts somewhere in a topic");
    if (*start != "earliest" && *start != "latest") kafka.fail("start", quoted(*start) + " is not earliest or latest");
    l.kafka.from_earliest = *start == "earliest";
  }
  if (auto p = kafka.integer("partitions", 1, 10'000)) {
    if (l.mode == LinkMode::source) kafka.fail("partitions", "a source reads the topic as it is");
    if (l.mode == LinkMode::spill) kafka.fail("partitions", "a spill's topic has one partition (its order)");
    l.kafka.partitions = static_cast<std::int32_t>(*p);
  }
}

// An AMQP short string that colod sends as a name (exchange, queue,
// routing key, vhost, user): 1-255 bytes (0-255 if `empty_ok`) without
// control characters.
bool is_amqp_name(std::string_view name, bool empty_ok) {
  if (name.size() > 255 || (name.empty() && !empty_ok)) return false;
  return std::none_of(name.begin(), name.end(), [](unsigned char ch) { return ch < 0x20 || ch == 0x7f; });
}

// A file named by a [[rabbitmq]] key, relative to the config's directory;
// it must be a readable regular file when the config is loaded.
std::string rabbitmq_file(const Section& s, const Source& src, std::string_view key, std::size_t limit,
                          std::string* text = nullptr) {
  const std::string file = s.required_string(key);
  if (file.empty()) s.fail(key, "empty (a file's path)");
  const std::string path = file.front() == '/' ? file : directory_of(src.path()) + file;
  const FileText content = read_small_file(path, limit);
  if (content.error != 0) s.fail(key, "cannot read " + quoted(path) + ": " + std::strerror(content.error));
  if (!content.regular) s.fail(key, quoted(path) + " is not a regular file");
  if (content.too_large) s.fail(key, quoted(path) + " is larger than " + std::to_string(limit) + " bytes");
  if (text != nullptr) *text = content.text;
  return path;
}

// [[rabbitmq]]: servers, by name. The password file is read now: a missing
// or empty one fails --check-config, not the link at run time.
void read_rabbitmq_servers(const Source& src, const Section& root, Config& c) {
  std::map<std::string, Declared> names;
  std::size_t index = 0;
  for (const toml::table* t : table_array(root, "rabbitmq")) {
    const Section server(src, *t, "rabbitmq[" + std::to_string(index++) + "]", "[[rabbitmq]]");
    server.only({"name", "host", "port", "vhost", "user", "password_file", "heartbeat_s", "tls", "tls_ca_file",
                 "tls_cert_file", "tls_key_file", "tls_verify"});
    RabbitmqServerConfig r;
    r.name = server.required_string("name");
    if (!is_node_name(r.name)) server.fail("name", quoted(r.name) + " is not 1-64 bytes of A-Z a-z 0-9 _ - .");
    const Declared here{server.key("name"), line_of(server.node("name"))};
    if (auto [it, fresh] = names.emplace(r.name, here); !fresh)
      server.fail("name", quoted(r.name) + " is already the name of " + where(it->second));
    r.host = server.required_string("host");
    if (r.host.empty() || r.host.size() > 253 ||
        std::any_of(r.host.begin(), r.host.end(), [](unsigned char ch) { return ch <= 0x20 || ch >= 0x7f || ch == '/'; }))
      server.fail("host", quoted(r.host) + " is not a host name or address (1-253 bytes, no spaces or '/')");
    if (auto p = server.integer("port", 1, 65535)) r.port = static_cast<std::uint16_t>(*p);
    if (auto v = server.string("vhost")) {
      if (!is_amqp_name(*v, false)) server.fail("vhost", quoted(*v) + " is not 1-255 bytes without control characters");
      r.vhost = *v;
    }
    r.user = server.required_string("user");
    if (!is_amqp_name(r.user, false)) server.fail("user", quoted(r.user) + " is not 1-255 bytes without control characters");
    std::string password;
    r.password_file = rabbitmq_file(server, src, "password_file", 4096, &password);
    // The first line, without its line end: `echo secret > file` works.
    password = password.substr(0, password.find('\n'));
    if (!password.empty() && password.back() == '\r') password.pop_back();
    if (password.empty()) server.fail("password_file", quoted(r.password_file) + " holds no password (its first line is empty)");
    r.password = std::move(password);
    if (auto h = server.integer("heartbeat_s", 0, 3600)) r.heartbeat_s = static_cast<std::uint32_t>(*h);
    r.tls = server.boolean("tls").value_or(false);
    for (std::string_view key : {"tls_ca_file", "tls_cert_file", "tls_key_file", "tls_verify"})
      if (server.node(key) != nullptr && !r.tls) server.fail(key, "only with tls = true");
    if (server.node("tls_ca_file") != nullptr) r.tls_ca_file = rabbitmq_file(server, src, "tls_ca_file", 1 << 20);
    if (server.node("tls_cert_file") != nullptr) r.tls_cert_file = rabbitmq_file(server, src, "tls_cert_file", 1 << 20);
    if (server.node("tls_key_file") != nullptr) r.tls_key_file = rabbitmq_file(server, src, "tls_key_file", 1 << 20);
    if (r.tls_cert_file.empty() != r.tls_key_file.empty())
      server.fail(r.tls_cert_file.empty() ? "tls_cert_file" : "tls_key_file",
                  "missing: a client certificate needs both tls_cert_file and tls_key_file");
    r.tls_verify = server.boolean("tls_verify").value_or(true);
    c.rabbitmq_servers.push_back(std::move(r));
  }
}

// A link's RabbitMQ side: its sub-table `rabbitmq`.
void read_link_rabbitmq(const Source& src, const Section& link, const Config& c, LinkConfig& l) {
  const toml::table* t = sub_table_of(link, "rabbitmq");
  const Section rmq(src, *t, link.key("rabbitmq"), "[link.rabbitmq]");
  rmq.only({"server", "exchange", "exchange_type", "queue", "routing_key", "passive", "dead_letter_exchange", "window",
            "prefetch"});
  l.system = LinkSystem::rabbitmq;
  if (l.mode == LinkMode::spill) link.fail("mode", "a spill goes to Kafka (a RabbitMQ link mirrors or sources)");
  auto& r = l.rabbitmq;
  r.server = rmq.required_string("server");
  if (std::none_of(c.rabbitmq_servers.begin(), c.rabbitmq_servers.end(),
                   [&](const RabbitmqServerConfig& s) { return s.name == r.server; })) {
    std::string names;
    for (const auto& s : c.rabbitmq_servers) names += (names.empty() ? "" : ", ") + quoted(s.name);
    rmq.fail("server", quoted(r.server) + " is not the name of a [[rabbitmq]] table (" +
                           (names.empty() ? std::string("there is none") : "known: " + names) + ")");
  }
  auto name = [&](std::string_view key, bool empty_ok) -> std::optional<std::string> {
    auto v = rmq.string(key);
    if (v && !is_amqp_name(*v, empty_ok))
      rmq.fail(key, quoted(*v) + " is not " + (empty_ok ? "0" : "1") + "-255 bytes without control characters");
    return v;
  };
  r.passive = rmq.boolean("passive").value_or(false);
  // RabbitMQ refuses to declare names that start with "amq." (its own).
  auto declarable = [&](std::string_view key, const std::string& value) {
    if (!r.passive && value.starts_with("amq."))
      rmq.fail(key, quoted(value) + ": names that start with 'amq.' are RabbitMQ's; use passive = true to use one");
  };
  std::string object_dotted = l.object;
  std::replace(object_dotted.begin(), object_dotted.end(), '/', '.');
  r.exchange = name("exchange", true).value_or("");
  declarable("exchange", r.exchange);
  if (auto type = rmq.string("exchange_type")) {
    if (*type != "direct" && *type != "fanout" && *type != "topic" && *type != "headers")
      rmq.fail("exchange_type", quoted(*type) + " is not direct, fanout, topic or headers");
    if (r.exchange.empty()) rmq.fail("exchange_type", "the default exchange has its own type (set exchange)");
    r.exchange_type = *type;
  }
  r.queue = name("queue", false).value_or(l.mode == LinkMode::source || r.exchange.empty() ? object_dotted : "");
  if (!r.queue.empty()) declarable("queue", r.queue);
  if (auto key = name("routing_key", true)) {
    if (l.mode == LinkMode::source && r.exchange.empty())
      rmq.fail("routing_key", "a source binds its queue with it: set exchange too");
    if (l.mode == LinkMode::mirror && r.exchange.empty())
      rmq.fail("routing_key", "the default exchange routes by queue name: set queue instead");
    r.routing_key = *key;
  } else {
    r.routing_key = r.queue.empty() ? object_dotted : r.queue;
  }
  if (auto dlx = name("dead_letter_exchange", true)) {
    if (r.passive) rmq.fail("dead_letter_exchange", "set when colod declares the queue (passive = false)");
    if (r.queue.empty()) rmq.fail("dead_letter_exchange", "a queue's setting: set queue too");
    r.dead_letter_exchange = *dlx;
  }
  if (auto w = rmq.integer("window", 1, 65535)) {
    if (l.mode != LinkMode::mirror) rmq.fail("window", "only a mirror publishes (a source has prefetch)");
    r.window = static_cast<std::uint32_t>(*w);
  }
  if (auto p = rmq.integer("prefetch", 1, 65535)) {
    if (l.mode != LinkMode::source) rmq.fail("prefetch", "only a source consumes (a mirror has window)");
    r.prefetch = static_cast<std::uint32_t>(*p);
  }
}

// [[link]]: objects linked to other systems. Checks what can be checked
// without the network: names, the object's kind and ring, the mode's keys,
// the cluster's name.
void read_links(const Source& src, const Section& root, Config& c) {
  std::map<std::string, Declared> names;
  std::size_t index = 0;
  for (const toml::table* t : table_array(root, "link")) {
    const Section link(src, *t, "link[" + std::to_string(index++) + "]", "[[link]]");
    link.only({"name", "object", "kind", "mode", "backpressure", "capacity", "max_message", "history", "acks",
               "max_deliveries", "high_watermark", "low_watermark", "paused", "kafka", "rabbitmq"});
    LinkConfig l;
    const std::string mode = link.required_string("mode");
    if (mode == "mirror") l.mode = LinkMode::mirror;
    else if (mode == "source") l.mode = LinkMode::source;
    else if (mode == "spill") l.mode = LinkMode::spill;
    else link.fail("mode", quoted(mode) + " is not mirror, source or spill");
    read_link_object(link, c, l);
    l.name = link.string("name").value_or(mode + ":" + l.object);
    if (l.name.empty() || l.name.size() > 200 || std::any_of(l.name.begin(), l.name.end(), [](unsigned char ch) {
          return std::isalnum(ch) == 0 && ch != '.' && ch != '_' && ch != '-' && ch != ':' && ch != '/';
        }))
      link.fail("name", quoted(l.name) + " is not 1-200 bytes of A-Z a-z 0-9 . _ - : /");
    const Declared here{link.key("name"), line_of(link.node("name") ? link.node("name") : link.node("mode"))};
    if (auto [it, fresh] = names.emplace(l.name, here); !fresh)
      link.fail("name", quoted(l.name) + " is already the name of " + where(it->second) +
                            (link.node("name") ? "" : " (two links of one object and mode need a name each)"));
    if (auto bp = link.string("backpressure")) {
      if (l.mode != LinkMode::mirror) link.fail("backpressure", "only a mirror has a backpressure class");
      if (*bp != "block" && *bp != "lossy") link.fail("backpressure", quoted(*bp) + " is not block or lossy");
      l.lossy = *bp == "lossy";
    }
    if (auto paused = link.boolean("paused")) l.paused = *paused;
    for (std::string_view k : {"high_watermark", "low_watermark"}) {
      const toml::node* n = link.node(k);
      if (n == nullptr) continue;
      if (l.mode != LinkMode::spill) link.fail(k, "only a spill has watermarks");
      const auto v = n->value<double>();
      if (!v || *v <= 0 || *v >= 1) link.fail(k, "expected a fraction of the ring between 0 and 1 (exclusive)");
      (k == "high_watermark" ? l.high_watermark : l.low_watermark) = *v;
    }
    if (l.mode == LinkMode::spill) {
      if (l.kind != ObjectKind::queue) link.fail("mode", "only a queue spills (its bursts go out and come back)");
      if (!l.acks)
        link.fail("mode", "a spill needs a queue with acks (what colod takes out must come back if it dies)");
      if (l.low_watermark >= l.high_watermark)
        link.fail("low_watermark", "must be below high_watermark (" + std::to_string(l.high_watermark) + ")");
    }
    // The other system: exactly one sub-table.
    if (link.node("kafka") != nullptr && link.node("rabbitmq") != nullptr)
      link.fail("rabbitmq", "a link joins one system: kafka or rabbitmq, not both");
    if (link.node("rabbitmq") != nullptr) read_link_rabbitmq(src, link, c, l);
    else read_link_kafka(src, link, c, l);
    c.links.push_back(std::move(l));
  }
}

Config read_config(const Source& src, const toml::table& doc) {
  Config c;
  c.path = src.path();
  const Section root(src, doc, "", "the top level, before any [table]", /*has_line*/ false);
  {
    // Unknown top-level names: a table is named as one, a stray key (written
    // before the first [table]) as a key.
    const std::initializer_list<std::string_view> known = {"node",  "security", "control", "metrics",
                                                           "limits", "log",    "peer",    "topic",
                                                           "queue",  "locks",  "lock_backend", "kafka",
                                                           "rabbitmq", "link"};
    for (const auto& [k, value] : doc) {
      if (std::find(known.begin(), known.end(), k.str()) != known.end()) continue;
      if (value.is_table()) src.fail(&value, std::string(k.str()), "unknown table [" + std::string(k.str()) + "]");
      if (value.is_array_of_tables())
        src.fail(&value, std::string(k.str()), "unknown table [[" + std::string(k.str()) + "]]");
    }
    root.only(known);
  }

  // [node]
  const toml::table* node_table = sub_table(root, "node");
  if (node_table == nullptr) src.fail(nullptr, "node.name", "missing (the file has no [node] table)");
  const Section node(src, *node_table, "node", "[node]");
  node.only({"name", "namespace", "listen"});
  c.node_name = node.required_string("name");
  if (!is_node_name(c.node_name)) node.fail("name", quoted(c.node_name) + " is not 1-64 bytes of A-Z a-z 0-9 _ - .");
  if (auto ns = node.string("namespace")) {
    if (auto ok = validate_namespace(*ns); !ok) node.fail("namespace", ok.error().message);
    c.ns = *ns;
  }
  c.listen = node.required_string("listen");
  if (auto problem = endpoint_problem(c.listen, false)) node.fail("listen", *problem);

  // [security]
  if (const toml::table* t = sub_table(root, "security")) {
    const Section security(src, *t, "security", "[security]");
    security.only({"secret_key_file", "insecure"});
    if (auto insecure = security.boolean("insecure")) c.insecure = *insecure;
    const std::string file = security.string("secret_key_file").value_or("");
    if (!file.empty()) {
      // Relative to the config file, not to colod's working directory
      // (which is / under systemd).
      c.secret_key_file = file.front() == '/' ? file : directory_of(src.path()) + file;
      const FileText key = read_small_file(c.secret_key_file, 4096);
      const std::string name = quoted(c.secret_key_file);
      if (key.error != 0) security.fail("secret_key_file", "cannot read " + name + ": " + std::strerror(key.error));
      if (!key.regular) security.fail("secret_key_file", name + " is not a regular file");
      if (key.too_large || !is_z85_key(trimmed(key.text)))
        security.fail("secret_key_file", name +
                                             " does not hold a CURVE secret key (40 characters of the Z85 "
                                             "alphabet; make a key pair with colod --keygen --out PREFIX)");
    }
  }

  // Secure by default: without CURVE, anyone who reaches a TCP endpoint
  // can claim to be a peer. Loopback and ipc:// stay on this host.
  if (c.secret_key_file.empty() && !c.insecure) {
    const auto tcp = tcp_endpoint(c.listen);
    if (tcp && !is_loopback_host(tcp->host))
      node.fail("listen", quoted(c.listen) +
                              " is reachable from other hosts, and CURVE is off: anyone who reaches it could join as "
                              "a peer. Set [security] secret_key_file (keys: colod --keygen), or listen on loopback, "
                              "or set [security] insecure = true on a network you trust (docs/security.md)");
  }

  // [control]
  c.control_socket = default_control_socket(c.ns);
  if (const toml::table* t = sub_table(root, "control")) {
    const Section control(src, *t, "control", "[control]");
    control.only({"socket"});
    if (const auto socket = control.string("socket"); socket && !socket->empty()) {  // "": the default
      if (auto problem = control_socket_problem(*socket)) control.fail("socket", *problem);
      c.control_socket = *socket;
    }
  }

  // [metrics]
  if (const toml::table* t = sub_table(root, "metrics")) {
    const Section metrics(src, *t, "metrics", "[metrics]");
    metrics.only({"port", "address"});
    if (auto port = metrics.integer("port", 0, 65535)) c.metrics_port = static_cast<std::uint16_t>(*port);
    if (auto address = metrics.string("address")) {
      unsigned char buf[sizeof(in6_addr)];
      if (::inet_pton(AF_INET, address->c_str(), buf) != 1 && ::inet_pton(AF_INET6, address->c_str(), buf) != 1)
        metrics.fail("address", quoted(*address) + " is not an IPv4 or IPv6 address");
      c.metrics_address = *address;
    }
  }

  // [limits]
  if (const toml::table* t = sub_table(root, "limits")) {
    const Section limits(src, *t, "limits", "[limits]");
    limits.only({"max_frame", "credit", "credit_bytes", "heartbeat_ms"});
    if (auto v = limits.integer("max_frame", 1024, std::int64_t{1} << 30)) c.max_frame = static_cast<std::uint32_t>(*v);
    if (auto v = limits.integer("credit", 1, 1'000'000)) c.credit = static_cast<std::uint32_t>(*v);
    if (auto v = limits.integer("credit_bytes", 0, std::int64_t{1} << 32)) c.credit_bytes = static_cast<std::uint64_t>(*v);
    if (auto v = limits.integer("heartbeat_ms", 50, 60'000)) c.heartbeat_ms = static_cast<std::uint32_t>(*v);
  }

  // [log]
  if (const toml::table* t = sub_table(root, "log")) {
    const Section log(src, *t, "log", "[log]");
    log.only({"level"});
    if (auto level = log.string("level")) {
      if (*level == "debug") c.log_level = LogLevel::debug;
      else if (*level == "info") c.log_level = LogLevel::info;
      else if (*level == "warn") c.log_level = LogLevel::warn;
      else if (*level == "error") c.log_level = LogLevel::error;
      else log.fail("level", quoted(*level) + " is not debug, info, warn or error");
    }
  }

  // [[peer]]
  const bool curve = !c.secret_key_file.empty();
  std::map<std::string, Declared> nodes;      // peers by name
  std::map<std::string, Declared> endpoints;  // and by endpoint
  std::size_t index = 0;
  for (const toml::table* t : table_array(root, "peer")) {
    const Section peer(src, *t, "peer[" + std::to_string(index++) + "]", "[[peer]]");
    peer.only({"name", "endpoint", "public_key"});
    PeerConfig p;
    p.name = peer.required_string("name");
    if (!is_node_name(p.name)) peer.fail("name", quoted(p.name) + " is not 1-64 bytes of A-Z a-z 0-9 _ - .");
    if (p.name == c.node_name) peer.fail("name", quoted(p.name) + " is this node's own name (node.name)");
    const Declared here{peer.key("name"), line_of(peer.node("name"))};
    if (auto [it, fresh] = nodes.emplace(p.name, here); !fresh)
      peer.fail("name", quoted(p.name) + " is already the name of " + where(it->second));
    p.endpoint = peer.required_string("endpoint");
    if (auto problem = endpoint_problem(p.endpoint, true)) peer.fail("endpoint", *problem);
    if (reaches_us(c.listen, p.endpoint))
      peer.fail("endpoint", quoted(p.endpoint) + " is this node's own listen endpoint (node.listen = " +
                                quoted(c.listen) + ")");
    const Declared at{peer.key("endpoint"), line_of(peer.node("endpoint"))};
    if (auto [it, fresh] = endpoints.emplace(p.endpoint, at); !fresh)
      peer.fail("endpoint", quoted(p.endpoint) + " is already the endpoint of " + where(it->second));
    p.public_key = peer.string("public_key").value_or("");
    if (curve && p.public_key.empty())
      peer.missing("public_key", " (CURVE is on: security.secret_key_file is set, so every peer needs its key)");
    if (!p.public_key.empty()) {
      if (!curve)
        peer.fail("public_key",
                  "set, but security.secret_key_file is not: CURVE needs our secret key too (or remove the "
                  "public keys to run without CURVE)");
      if (!is_z85_key(p.public_key))
        peer.fail("public_key",
                  quoted(p.public_key) + " is not a CURVE public key (40 characters of the Z85 alphabet)");
    }
    c.peers.push_back(std::move(p));
  }

  // [[topic]] and [[queue]]: one name space for both.
  std::map<std::string, Declared> objects;
  auto declare = [&](const Section& s, const std::string& name) {
    if (auto ok = validate_object_name(name); !ok) s.fail("name", ok.error().message);
    const Declared here{s.key("name"), line_of(s.node("name"))};
    if (auto [it, fresh] = objects.emplace(name, here); !fresh)
      s.fail("name", quoted(name) + " is already declared as " + where(it->second));
  };
  index = 0;
  for (const toml::table* t : table_array(root, "topic")) {
    const Section topic(src, *t, "topic[" + std::to_string(index++) + "]", "[[topic]]");
    topic.only({"name", "capacity", "max_message", "history", "backpressure"});
    TopicConfig tc;
    tc.name = topic.required_string("name");
    declare(topic, tc.name);
    read_ring(topic, tc.capacity, tc.max_message);
    check_frame_fits(topic, tc.max_message, c.max_frame);
    if (auto h = topic.integer("history", 0, UINT32_MAX)) tc.history = static_cast<std::uint32_t>(*h);
    if (auto bp = topic.string("backpressure")) {
      if (*bp != "block" && *bp != "lossy") topic.fail("backpressure", quoted(*bp) + " is not block or lossy");
      tc.lossy = *bp == "lossy";
    }
    c.topics.push_back(std::move(tc));
  }
  index = 0;
  for (const toml::table* t : table_array(root, "queue")) {
    const Section queue(src, *t, "queue[" + std::to_string(index++) + "]", "[[queue]]");
    queue.only({"name", "home", "capacity", "max_message", "acks", "max_deliveries"});
    QueueConfig qc;
    qc.name = queue.required_string("name");
    declare(queue, qc.name);
    qc.home = queue.required_string("home");
    if (qc.home != c.node_name && nodes.count(qc.home) == 0) {
      std::string names = quoted(c.node_name);
      for (const auto& [name, declared] : nodes) names += ", " + quoted(name);
      queue.fail("home", quoted(qc.home) + " is neither this node nor one of its peers (" + names + ")");
    }
    read_ring(queue, qc.capacity, qc.max_message);
    check_frame_fits(queue, qc.max_message, c.max_frame);
    if (auto acks = queue.boolean("acks")) qc.acks = *acks;
    if (auto m = queue.integer("max_deliveries", 1, 255)) qc.max_deliveries = static_cast<std::uint32_t>(*m);
    c.queues.push_back(std::move(qc));
  }

  // [locks]
  if (const toml::table* t = sub_table(root, "locks")) {
    const Section locks(src, *t, "locks", "[locks]");
    locks.only({"max_handoffs", "max_hold_ms", "idle_release_ms", "requeue_pause_ms"});
    // Tokens carry the local grant count in 20 bits (lock_record.hpp).
    if (auto v = locks.integer("max_handoffs", 1, 1'000'000)) c.locks.max_handoffs = static_cast<std::uint32_t>(*v);
    if (auto v = locks.integer("max_hold_ms", 1, 3'600'000)) c.locks.max_hold_ms = static_cast<std::uint32_t>(*v);
    if (auto v = locks.integer("idle_release_ms", 0, 60'000)) c.locks.idle_release_ms = static_cast<std::uint32_t>(*v);
    if (auto v = locks.integer("requeue_pause_ms", 0, 10'000)) c.locks.requeue_pause_ms = static_cast<std::int32_t>(*v);
  }

  // [[lock_backend]]
  index = 0;
  std::map<std::string, Declared> prefixes;
  for (const toml::table* t : table_array(root, "lock_backend")) {
    const Section backend(src, *t, "lock_backend[" + std::to_string(index++) + "]", "[[lock_backend]]");
    backend.only({"kind", "endpoints", "prefix", "root", "lease_ms", "op_timeout_ms", "poll_ms"});
    LockBackendConfig b;
    b.kind = backend.required_string("kind");
    if (b.kind == "consul")
      backend.fail("kind", "consul is not supported (its server is not open source any more); use zookeeper, etcd or redis");
    if (b.kind != "zookeeper" && b.kind != "etcd" && b.kind != "redis")
      backend.fail("kind", quoted(b.kind) + " is not zookeeper, etcd or redis");
    b.endpoints = backend.required_string("endpoints");
    if (b.endpoints.empty() || b.endpoints.size() > 1024)
      backend.fail("endpoints", "must be 1-1024 bytes");
    if (b.kind == "etcd") {
      if (b.endpoints.rfind("http://", 0) != 0)
        backend.fail("endpoints", quoted(b.endpoints) + " is not http://HOST:PORT (etcd's HTTP/JSON gateway; https is not supported)");
      if (auto problem = host_list_problem(std::string_view(b.endpoints).substr(7), false, false))
        backend.fail("endpoints", *problem);
    } else if (auto problem = host_list_problem(b.endpoints, b.kind == "zookeeper", b.kind == "zookeeper")) {
      backend.fail("endpoints", *problem);
    }
    b.prefix = backend.string("prefix").value_or("");
    for (unsigned char ch : b.prefix) {
      if (!std::isalnum(ch) && ch != '.' && ch != '_' && ch != '/' && ch != '-')
        backend.fail("prefix", quoted(b.prefix) + " has a character no lock name can have (names are [A-Za-z0-9._/-])");
    }
    if (b.prefix.size() > kMaxObjectNameBytes) backend.fail("prefix", "longer than any lock name");
    const Declared here{backend.key("prefix"), line_of(backend.node("prefix") ? backend.node("prefix") : backend.node("kind"))};
    if (auto [it, fresh] = prefixes.emplace(b.prefix, here); !fresh)
      backend.fail("prefix", quoted(b.prefix) + " is already served by " + where(it->second));
    b.root = backend.string("root").value_or("");
    if (b.root.size() > 512) backend.fail("root", "longer than 512 bytes");
    for (unsigned char ch : b.root) {
      if (ch < 0x21 || ch > 0x7e) backend.fail("root", quoted(b.root) + " must be printable ASCII without spaces");
    }
    // ZooKeeper's and etcd's leases are whole ticks or seconds; their servers
    // refuse less than about a second.
    const std::int64_t min_lease = b.kind == "redis" ? 100 : 1000;
    if (auto v = backend.integer("lease_ms", min_lease, 600'000)) b.lease_ms = static_cast<std::uint32_t>(*v);
    if (auto v = backend.integer("op_timeout_ms", 10, 60'000)) b.op_timeout_ms = static_cast<std::uint32_t>(*v);
    if (auto v = backend.integer("poll_ms", 1, 1'000)) {
      if (b.kind != "redis") backend.fail("poll_ms", "only redis polls; " + b.kind + " tells waiters");
      b.poll_ms = static_cast<std::uint32_t>(*v);
    }
    c.lock_backends.push_back(std::move(b));
  }

  read_kafka_clusters(src, root, c);
  read_rabbitmq_servers(src, root, c);
  read_links(src, root, c);
  return c;
}

}  // namespace

Result<Config> load_config(const std::string& path) {
  // Open errors first, with errno: toml++ only says that it could not open
  // the file. The text itself is read by toml::parse_file.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) {
    const int error = errno;
    return Error{error == ENOENT || error == ENOTDIR ? Errc::not_found : Errc::invalid_argument,
                 path + ": cannot read: " + std::strerror(error)};
  }
  struct stat st {};
  const bool regular = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
  ::close(fd);
  if (!regular) return Error{Errc::invalid_argument, path + ": cannot read: not a regular file"};
  const Source src(path);
  try {
    const toml::table doc = toml::parse_file(path);
    return read_config(src, doc);
  } catch (const toml::parse_error& e) {
    std::string where = path;
    if (e.source().begin.line != 0) where += ":" + std::to_string(e.source().begin.line);
    return Error{Errc::invalid_argument, where + ": " + std::string(e.description())};
  } catch (const ConfigError& e) {
    return Error{Errc::invalid_argument, e.message};
  }
}

std::string default_control_socket(const std::string& ns) { return colo::default_control_socket(ns); }

const char* to_string(LinkMode mode) noexcept {
  switch (mode) {
    case LinkMode::mirror: return "mirror";
    case LinkMode::source: return "source";
    case LinkMode::spill: return "spill";
  }
  return "unknown";
}

const char* log_level_name(LogLevel level) noexcept {
  switch (level) {
    case LogLevel::debug: return "debug";
    case LogLevel::info: return "info";
    case LogLevel::warn: return "warn";
    case LogLevel::error: return "error";
  }
  return "unknown";
}

}  // namespace colo::bridge
