package dev.roomcast.clients;

import java.lang.reflect.Field;
import java.net.URI;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import io.socket.client.Ack;
import io.socket.client.IO;
import io.socket.client.Manager;
import io.socket.client.Socket;
import io.socket.client.SocketOptionBuilder;
import io.socket.engineio.client.Transport;

/**
 * A stock socket.io-client-java socket that records every event it gets (as plain values) and
 * answers the hub's ack requests from {@code answers}.
 */
final class Peer implements AutoCloseable {
  final String namespace;
  final List<List<Object>> got = Collections.synchronizedList(new ArrayList<>());
  final Map<String, Object[]> answers = new ConcurrentHashMap<>();
  final List<Object> errors = new CopyOnWriteArrayList<>();
  final List<Runnable> onConnect = new CopyOnWriteArrayList<>();
  final AtomicInteger connects = new AtomicInteger();
  final AtomicInteger disconnects = new AtomicInteger();
  private final boolean reconnection;
  Socket socket;

  Peer(String namespace, boolean reconnection) {
    this.namespace = namespace;
    this.reconnection = reconnection;
  }

  Peer connect(String proxy, Map<String, String> auth, String... transports) {
    SocketOptionBuilder b = IO.Options.builder()
        .setForceNew(true)
        .setReconnection(reconnection)
        .setReconnectionDelay(100)
        .setReconnectionDelayMax(500)
        .setRandomizationFactor(0)
        .setTimeout(10_000)
        .setAuth(auth);
    if (transports.length > 0) b.setTransports(transports);
    socket = IO.socket(URI.create(namespace.equals("/") ? proxy : proxy + namespace), b.build());
    CountDownLatch done = new CountDownLatch(1);
    socket.on(Socket.EVENT_CONNECT, args -> {
      connects.incrementAndGet();
      done.countDown();
      for (Runnable r : onConnect) r.run();
    });
    socket.on(Socket.EVENT_CONNECT_ERROR, args -> {
      errors.add(args.length > 0 ? Hub.plain(args[0]) : null);
      done.countDown();
    });
    socket.on(Socket.EVENT_DISCONNECT, args -> disconnects.incrementAndGet());
    socket.onAnyIncoming(args -> {
      List<Object> event = new ArrayList<>();
      Ack ack = null;
      for (Object a : args) {
        if (a instanceof Ack x) ack = x;
        else event.add(Hub.plain(a));
      }
      got.add(event);
      Object[] answer = answers.get((String) args[0]);
      if (ack != null && answer != null) ack.call(answer);
    });
    socket.connect();
    try {
      if (!done.await(15, TimeUnit.SECONDS)) throw new AssertionError("no connect nor connect_error in 15 s");
    } catch (InterruptedException e) {
      throw new RuntimeException(e);
    }
    if (!socket.connected()) {
      socket.close();
      throw new ConnectRefused(errors.isEmpty() ? null : errors.get(errors.size() - 1));
    }
    return this;
  }

  /** connect_error, with its plain value. */
  static final class ConnectRefused extends RuntimeException {
    final transient Object error;

    ConnectRefused(Object error) {
      super("connect_error: " + error);
      this.error = error;
    }
  }

  String id() {
    return socket.id();
  }

  /** The engine's current transport name (socket.io-client-java exposes no accessor for it). */
  String transport() {
    try {
      Field engineField = Manager.class.getDeclaredField("engine");
      engineField.setAccessible(true);
      Object engine = engineField.get(socket.io());
      Field transportField = io.socket.engineio.client.Socket.class.getDeclaredField("transport");
      transportField.setAccessible(true);
      Transport t = (Transport) transportField.get(engine);
      return t == null ? null : t.name;
    } catch (ReflectiveOperationException e) {
      throw new RuntimeException(e);
    }
  }

  /** emit with an Ack; the ack's arguments (one: the value itself; several: a List). */
  Object call(String event, Object... args) {
    CompletableFuture<Object[]> f = new CompletableFuture<>();
    Object[] wire = Arrays.stream(args).map(Hub::toOrgJson).toArray();
    socket.emit(event, wire, reply -> f.complete(reply));
    try {
      Object[] reply = f.get(5, TimeUnit.SECONDS);
      if (reply.length == 1) return Hub.plain(reply[0]);
      List<Object> l = new ArrayList<>();
      for (Object r : reply) l.add(Hub.plain(r));
      return l;
    } catch (Exception e) {
      throw new AssertionError("no ack for " + event + " within 5 s", e);
    }
  }

  /** emit with an Ack; the ack's raw arguments, or null when none came within {@code ms}. */
  Object[] callOrNull(String event, long ms, Object... args) {
    CompletableFuture<Object[]> f = new CompletableFuture<>();
    socket.emit(event, Arrays.stream(args).map(Hub::toOrgJson).toArray(), reply -> f.complete(reply));
    try {
      return f.get(ms, TimeUnit.MILLISECONDS);
    } catch (java.util.concurrent.TimeoutException e) {
      return null;
    } catch (Exception e) {
      throw new RuntimeException(e);
    }
  }

  void join(String room) {
    Object r = call("roomcast:join", room);
    if (!Map.of("ok", true).equals(r)) throw new AssertionError("join " + room + ": " + r);
  }

  List<List<Object>> events(String name) {
    synchronized (got) {
      return got.stream().filter(e -> e.get(0).equals(name)).map(e -> (List<Object>) new ArrayList<>(e)).toList();
    }
  }

  @Override
  public void close() {
    if (socket != null) socket.close();
  }
}
