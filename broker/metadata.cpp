// colo/metadata.hpp's reader and colo/internal/links.hpp's writer: the
// encoding both sides of Message::metadata() agree on.
#include "colo/metadata.hpp"

#include <cstring>

#include "colo/internal/links.hpp"

namespace colo {
namespace {

constexpr std::size_t kFieldHeader = 6;  // type u16, length u32

template <typename T>
T read_le(const std::byte* p) noexcept {
  T value;
  std::memcpy(&value, p, sizeof value);  // x86-64 only (as the ring): little-endian in memory
  return value;
}

std::string_view text_of(std::span<const std::byte> value) noexcept {
  return {reinterpret_cast<const char*>(value.data()), value.size()};
}

}  // namespace

std::optional<MetadataField> MetadataReader::next() noexcept {
  if (rest_.empty() || !ok_) return std::nullopt;
  if (rest_.size() < kFieldHeader) {
    ok_ = false;
    return std::nullopt;
  }
  const auto type = read_le<std::uint16_t>(rest_.data());
  const auto length = read_le<std::uint32_t>(rest_.data() + 2);
  if (length > rest_.size() - kFieldHeader) {
    ok_ = false;
    return std::nullopt;
  }
  MetadataField field{static_cast<MetadataType>(type), rest_.subspan(kFieldHeader, length)};
  rest_ = rest_.subspan(kFieldHeader + length);
  return field;
}

std::optional<KafkaMetadata> kafka_metadata(std::span<const std::byte> metadata) {
  KafkaMetadata out;
  bool kafka = false;
  MetadataReader reader(metadata);
  while (auto field = reader.next()) {
    const auto v = field->value;
    switch (field->type) {
      case MetadataType::system: kafka = text_of(v) == "kafka"; break;
      case MetadataType::topic: out.topic = text_of(v); break;
      case MetadataType::partition:
        if (v.size() != 4) return std::nullopt;
        out.partition = read_le<std::int32_t>(v.data());
        break;
      case MetadataType::offset:
        if (v.size() != 8) return std::nullopt;
        out.offset = read_le<std::int64_t>(v.data());
        break;
      case MetadataType::timestamp_ms:
        if (v.size() != 8) return std::nullopt;
        out.timestamp_ms = read_le<std::int64_t>(v.data());
        break;
      case MetadataType::key: out.key = v; break;
      case MetadataType::header: {
        if (v.size() < 2) return std::nullopt;
        const auto name_length = read_le<std::uint16_t>(v.data());
        if (name_length > v.size() - 2) return std::nullopt;
        out.headers.push_back({text_of(v.subspan(2, name_length)), v.subspan(2 + name_length)});
        break;
      }
      case MetadataType::null_header: out.headers.push_back({text_of(v), std::nullopt}); break;
      case MetadataType::redelivery:
        if (v.size() != 4) return std::nullopt;
        out.redelivery = read_le<std::uint32_t>(v.data());
        break;
      default: break;  // a field of a later colod
    }
  }
  if (!reader.ok() || !kafka) return std::nullopt;
  return out;
}

std::optional<RabbitmqMetadata> rabbitmq_metadata(std::span<const std::byte> metadata) {
  RabbitmqMetadata out;
  bool rabbitmq = false;
  MetadataReader reader(metadata);
  while (auto field = reader.next()) {
    const auto v = field->value;
    switch (field->type) {
      case MetadataType::system: rabbitmq = text_of(v) == "rabbitmq"; break;
      case MetadataType::queue: out.queue = text_of(v); break;
      case MetadataType::exchange: out.exchange = text_of(v); break;
      case MetadataType::routing_key: out.routing_key = text_of(v); break;
      case MetadataType::message_id: out.message_id = text_of(v); break;
      case MetadataType::content_type: out.content_type = text_of(v); break;
      case MetadataType::timestamp_ms:
        if (v.size() != 8) return std::nullopt;
        out.timestamp_ms = read_le<std::int64_t>(v.data());
        break;
      case MetadataType::header: {
        if (v.size() < 2) return std::nullopt;
        const auto name_length = read_le<std::uint16_t>(v.data());
        if (name_length > v.size() - 2) return std::nullopt;
        out.headers.push_back({text_of(v.subspan(2, name_length)), v.subspan(2 + name_length)});
        break;
      }
      case MetadataType::null_header: out.headers.push_back({text_of(v), std::nullopt}); break;
      case MetadataType::redelivery:
        if (v.size() != 4) return std::nullopt;
        out.redelivered = read_le<std::uint32_t>(v.data()) != 0;
        break;
      default: break;  // a field of another system, or of a later colod
    }
  }
  if (!reader.ok() || !rabbitmq) return std::nullopt;
  return out;
}

namespace internal {

void MetadataWriter::add(MetadataType type, std::span<const std::byte> value) {
  const auto t = static_cast<std::uint16_t>(type);
  const auto n = static_cast<std::uint32_t>(value.size());
  const std::size_t at = bytes_.size();
  bytes_.resize(at + kFieldHeader + value.size());
  std::memcpy(bytes_.data() + at, &t, 2);
  std::memcpy(bytes_.data() + at + 2, &n, 4);
  if (!value.empty()) std::memcpy(bytes_.data() + at + kFieldHeader, value.data(), value.size());
}

void MetadataWriter::add(MetadataType type, std::string_view text) {
  add(type, std::span<const std::byte>(reinterpret_cast<const std::byte*>(text.data()), text.size()));
}

void MetadataWriter::add_i32(MetadataType type, std::int32_t value) {
  add(type, std::as_bytes(std::span<const std::int32_t>(&value, 1)));
}
void MetadataWriter::add_i64(MetadataType type, std::int64_t value) {
  add(type, std::as_bytes(std::span<const std::int64_t>(&value, 1)));
}
void MetadataWriter::add_u32(MetadataType type, std::uint32_t value) {
  add(type, std::as_bytes(std::span<const std::uint32_t>(&value, 1)));
}

void MetadataWriter::add_header(std::string_view name, std::optional<std::span<const std::byte>> value) {
  if (!value) {
    add(MetadataType::null_header, name);
    return;
  }
  // Kafka header names are strings of at most 32767 bytes (a Java short),
  // AMQP's of at most 255.
  const auto name_length = static_cast<std::uint16_t>(std::min<std::size_t>(name.size(), 0xffff));
  std::vector<std::byte> v(2 + name_length + value->size());
  std::memcpy(v.data(), &name_length, 2);
  std::memcpy(v.data() + 2, name.data(), name_length);
  if (!value->empty()) std::memcpy(v.data() + 2 + name_length, value->data(), value->size());
  add(MetadataType::header, v);
}

}  // namespace internal
}  // namespace colo
