#!/usr/bin/python3
"""The other side of the RabbitMQ tests: what an ordinary AMQP client does
to the server, with python3-pika (Debian's), through /usr/bin/python3 (a
pyenv `python3` on PATH may not see Debian's packages). User guest,
password guest, vhost /.

  amqp_tool.py HOST:PORT declare QUEUE [DLX]     # a durable queue (dead-lettering to exchange DLX)
  amqp_tool.py HOST:PORT dead-letters EXCHANGE QUEUE   # a durable fanout exchange and a queue bound to it
  amqp_tool.py HOST:PORT delete QUEUE
  amqp_tool.py HOST:PORT count QUEUE             # prints its message count
  amqp_tool.py HOST:PORT publish QUEUE COUNT [SIZE]
      # COUNT persistent messages "m<i> " padded with '.' to SIZE bytes (default 0:
      # no padding), i = 0..COUNT-1, into QUEUE through the default exchange,
      # in transactions of 1000 (each committed before the next);
      # each with the header run=<QUEUE>, message id "id-<i>" and content type text/plain
  amqp_tool.py HOST:PORT hold QUEUE SECONDS
      # declares QUEUE exclusive (auto-delete), prints "held", keeps the
      # connection SECONDS (answering heartbeats), then closes it
  amqp_tool.py HOST:PORT drain QUEUE OUT EXPECTED IDLE_S
      # consumes (manual acks) until EXPECTED messages or IDLE_S seconds
      # without one; one line per message to OUT:
      # "<message id>\\t<colo.redelivery>\\t<header names>\\t<timestamp>\\t<body>"
      # (header names comma-separated and sorted; anything missing as -); prints the count

Exit status: 0 done, 1 the server refused or did not answer (the reason on stderr).
"""
import sys

import pika


def connect(address):
    host, port = address.rsplit(":", 1)
    params = pika.ConnectionParameters(host=host, port=int(port), credentials=pika.PlainCredentials("guest", "guest"),
                                       heartbeat=30, blocked_connection_timeout=60)
    return pika.BlockingConnection(params)


def declare(ch, queue, dlx=None):
    args = {"x-dead-letter-exchange": dlx} if dlx else None
    ch.queue_declare(queue, durable=True, arguments=args)


def publish(ch, queue, count, size):
    # pika's blocking channel waits for each confirm when confirms are on (a
    # round trip per message): transactions of 1000 instead, each commit one
    # round trip, answered once the server has the messages.
    ch.tx_select()
    for i in range(count):
        body = f"m{i} ".encode()
        if len(body) < size:
            body += b"." * (size - len(body))
        ch.basic_publish("", queue, body,
                         pika.BasicProperties(delivery_mode=2, headers={"run": queue}, message_id=f"id-{i}",
                                              content_type="text/plain"))
        if (i + 1) % 1000 == 0:
            ch.tx_commit()
    ch.tx_commit()


def drain(ch, queue, out, expected, idle_s):
    ch.basic_qos(prefetch_count=1000)
    n = 0
    unacked = None  # the last delivery not yet acknowledged
    with open(out, "w", encoding="utf-8") as f:
        for method, props, body in ch.consume(queue, inactivity_timeout=idle_s):
            if method is None:
                break
            h = props.headers or {}
            fields = [props.message_id or "-", h.get("colo.redelivery", "-"), ",".join(sorted(h)) or "-",
                      "-" if props.timestamp is None else props.timestamp]
            f.write("\t".join(str(x) for x in fields) + "\t" + body.decode("utf-8", "replace") + "\n")
            n += 1
            unacked = method.delivery_tag
            if n % 500 == 0 or n >= expected:
                ch.basic_ack(unacked, multiple=True)
                unacked = None
            if n >= expected:
                break
        # What was read is taken (written out), also when the wait ran out.
        if unacked is not None:
            ch.basic_ack(unacked, multiple=True)
        ch.cancel()
    print(n)


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    address, command, queue = sys.argv[1:4]
    rest = sys.argv[4:]
    try:
        conn = connect(address)
        ch = conn.channel()
        if command == "declare":
            declare(ch, queue, rest[0] if rest else None)
        elif command == "dead-letters":
            ch.exchange_declare(queue, "fanout", durable=True)
            declare(ch, rest[0])
            ch.queue_bind(rest[0], queue)
        elif command == "delete":
            ch.queue_delete(queue)
        elif command == "count":
            print(ch.queue_declare(queue, passive=True).method.message_count)
        elif command == "publish":
            publish(ch, queue, int(rest[0]), int(rest[1]) if len(rest) > 1 else 0)
        elif command == "hold":
            ch.queue_declare(queue, exclusive=True, auto_delete=True)
            print("held", flush=True)
            conn.sleep(float(rest[0]))
        elif command == "drain":
            drain(ch, queue, rest[0], int(rest[1]), float(rest[2]))
        else:
            sys.exit(__doc__)
        conn.close()
    except pika.exceptions.AMQPError as e:
        print(f"amqp_tool: {command} {queue}: {e!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
