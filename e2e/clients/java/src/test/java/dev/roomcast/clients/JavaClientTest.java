package dev.roomcast.clients;

import static dev.roomcast.clients.Hub.b64;
import static dev.roomcast.clients.Hub.control;
import static dev.roomcast.clients.Hub.eventually;
import static dev.roomcast.clients.Hub.fetchSockets;
import static dev.roomcast.clients.Hub.map;
import static dev.roomcast.clients.Hub.mgmt;
import static dev.roomcast.clients.Hub.ownerOf;
import static dev.roomcast.clients.Hub.pattern;
import static dev.roomcast.clients.Hub.rand;
import static dev.roomcast.clients.Hub.token;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.annotation.ElementType;
import java.lang.annotation.Retention;
import java.lang.annotation.RetentionPolicy;
import java.lang.annotation.Target;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.CopyOnWriteArrayList;

import io.socket.client.IO;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.extension.ExtensionContext;
import org.junit.jupiter.api.extension.TestWatcher;

/**
 * socket.io-client-java, unchanged, against the 3-member hub behind the round-robin proxy
 * (e2e/clients/stack.mjs). Each test names the feature it verifies; it is written to the
 * suite's results once the test passed.
 */
@ExtendWith(JavaClientTest.FeatureRecorder.class)
class JavaClientTest {
  @Retention(RetentionPolicy.RUNTIME)
  @Target(ElementType.METHOD)
  @interface Feature {
    String value();
  }

  static final class FeatureRecorder implements TestWatcher {
    @Override
    public void testSuccessful(ExtensionContext context) {
      Feature f = context.getRequiredTestMethod().getAnnotation(Feature.class);
      if (f != null) Hub.record(Map.of("type", "feature", "feature", f.value()));
    }
  }

  static String proxy;
  final List<Peer> peers = new CopyOnWriteArrayList<>();

  @BeforeAll
  static void clientLine() {
    proxy = Hub.proxy();
    String jar = IO.class.getProtectionDomain().getCodeSource().getLocation().getPath();
    String engineJar = io.socket.engineio.client.Socket.class.getProtectionDomain().getCodeSource().getLocation().getPath();
    String okhttpJar = okhttp3.OkHttpClient.class.getProtectionDomain().getCodeSource().getLocation().getPath();
    Map<String, Object> details = new TreeMap<>();
    details.put("engine.io-client", versionOf(engineJar, "engine.io-client"));
    details.put("okhttp", versionOf(okhttpJar, "okhttp"));
    details.put("java", System.getProperty("java.version"));
    Hub.record(Map.of(
        "type", "client",
        "version", "socket.io-client " + versionOf(jar, "socket.io-client") + " (engine.io-client "
            + versionOf(engineJar, "engine.io-client") + ")",
        "details", details));
  }

  /** The version in a Maven jar's file name: .../NAME-VERSION.jar. */
  static String versionOf(String jarPath, String name) {
    String file = jarPath.substring(jarPath.lastIndexOf('/') + 1);
    if (!file.startsWith(name + "-") || !file.endsWith(".jar")) throw new AssertionError("unexpected jar " + jarPath);
    return file.substring(name.length() + 1, file.length() - 4);
  }

  @AfterEach
  void closeAll() {
    for (Peer p : peers) p.close();
    peers.clear();
  }

  Peer peer(String namespace, boolean reconnection) {
    Peer p = new Peer(namespace, reconnection);
    peers.add(p);
    return p;
  }

  Peer connectAs(String namespace, String sub, String... transports) {
    return peer(namespace, false).connect(proxy, Map.of("token", token(sub)), transports);
  }

  Peer connect(String... transports) {
    return connectAs("/", "java-" + rand(), transports);
  }

  static void settleCounts(List<Peer> who, List<Integer> counts, String event, String what) {
    try {
      eventually(() -> {
        for (int i = 0; i < who.size(); i++) if (who.get(i).events(event).size() < counts.get(i)) return false;
        return true;
      }, 5000, what);
    } catch (AssertionError e) {
      // compared below
    }
    Hub.sleep(300);
    List<Integer> got = new ArrayList<>();
    for (Peer p : who) got.add(p.events(event).size());
    assertEquals(counts, got, what + ": deliveries per socket");
  }

  static Map<String, Object> m(Object... kv) {
    Map<String, Object> out = new TreeMap<>();
    for (int i = 0; i < kv.length; i += 2) out.put((String) kv[i], kv[i + 1]);
    return out;
  }

  /**
   * An answer {ok: true, KEY: n}: the hub counts the sockets of the node that served the call
   * only (docs/configuration.md, cluster), so through the proxy n is at most {@code most}; what
   * each client got is counted separately.
   */
  static void assertOk(Object answer, String key, long most) {
    Map<String, Object> res = map(answer);
    assertEquals(new java.util.TreeSet<>(List.of("ok", key)), res.keySet(), String.valueOf(res));
    assertEquals(true, res.get("ok"), String.valueOf(res));
    long n = (Long) res.get(key);
    assertTrue(n >= 0 && n <= most, res + ": " + key + " not in 0.." + most);
  }

  /** A management emit's answer {recipients: n}, n at most {@code most} (see assertOk). */
  static void assertRecipients(Map<String, Object> res, long most) {
    assertEquals(java.util.Set.of("recipients"), res.keySet(), String.valueOf(res));
    long n = (Long) res.get("recipients");
    assertTrue(n >= 0 && n <= most, res + ": recipients not in 0.." + most);
  }

  static final Map<String, Object> OK = m("ok", true);

  @Test
  @Feature("websocket")
  void websocketOnly() {
    Peer a = connect("websocket");
    assertEquals("websocket", a.transport());
    String room = "room:ws-" + rand();
    a.join(room);
    Map<String, Object> sock = fetchSockets("/", room).get(0);
    assertTrue(((String) map(sock.get("handshake")).get("query")).contains("transport=websocket"));
  }

  @Test
  @Feature("polling")
  void pollingOnly() {
    Peer a = connect("polling");
    assertEquals("polling", a.transport());
    a.join("room:poll-" + rand());
    assertRecipients(mgmt("POST", "/v1/namespaces/%2F/emit", m("event", "push", "args", List.of(1), "socketIds", List.of(a.id()))), 1);
    settleCounts(List.of(a), List.of(1), "push", "push over polling");
    assertEquals("polling", a.transport());
  }

  @Test
  @Feature("upgrade")
  void defaultTransportsUpgrade() {
    Peer a = connect();
    eventually(() -> "websocket".equals(a.transport()), 10_000, "upgrade to websocket");
    String room = "room:up-" + rand();
    a.join(room);
    Map<String, Object> sock = fetchSockets("/", room).get(0);
    assertTrue(((String) map(sock.get("handshake")).get("query")).contains("transport=polling"), "the session started on polling");
    assertEquals(0, a.disconnects.get());
  }

  @Test
  @Feature("namespace")
  void customNamespace() {
    String room = "room:ns-" + rand();
    Peer inNs = connectAs("/clients", "java-ns");
    Peer inNs2 = connectAs("/clients", "java-ns2");
    Peer inRoot = connect();
    for (Peer p : List.of(inNs, inNs2, inRoot)) p.join(room);
    assertOk(inNs2.call("roomcast:emit", m("room", room, "event", "msg", "args", List.of("ns"))), "recipients", 1);
    assertRecipients(mgmt("POST", "/v1/namespaces/%2Fclients/emit", m("event", "news", "args", List.of("api"), "rooms", List.of(room))), 2);
    settleCounts(List.of(inNs, inNs2, inRoot), List.of(1, 0, 0), "msg", "roomcast:emit in /clients");
    settleCounts(List.of(inNs, inNs2, inRoot), List.of(1, 1, 0), "news", "management emit to /clients");
    List<String> ids = new ArrayList<>(fetchSockets("/clients", room).stream().map(s -> (String) s.get("id")).sorted().toList());
    assertEquals(new ArrayList<>(List.of(inNs.id(), inNs2.id()).stream().sorted().toList()), ids);
  }

  @Test
  @Feature("rooms")
  void roomsThroughPolicies() {
    String room = "room:r-" + rand();
    Peer a = connectAs("/", "alice");
    Peer b = connect("websocket");
    Peer c = connect("polling");
    Peer outsider = connect();
    for (Peer p : List.of(a, b, c)) p.join(room);
    Map<String, Object> refused = map(a.call("roomcast:join", "admin"));
    assertEquals(false, refused.get("ok"));
    assertEquals("forbidden", refused.get("error"));
    a.join("user:alice");
    assertEquals("forbidden", map(a.call("roomcast:join", "user:bob")).get("error"));
    assertOk(a.call("roomcast:emit", m("room", room, "event", "msg", "args", List.of("hello", m("n", 1)))), "recipients", 2);
    settleCounts(List.of(b, c, a, outsider), List.of(1, 1, 0, 0), "msg", "roomcast:emit to the room");
    assertEquals(List.of(List.of("msg", "hello", m("n", 1L))), b.events("msg"));
    assertEquals(OK, b.call("roomcast:leave", room));
    assertOk(a.call("roomcast:emit", m("room", room, "event", "msg", "args", List.of("again"))), "recipients", 1);
    settleCounts(List.of(b, c), List.of(1, 2), "msg", "after b left");
  }

  @Test
  @Feature("ack-client")
  void acksClientToHub() {
    String room = "room:ack-" + rand();
    Peer a = connect();
    Peer b = connect();
    a.join(room);
    b.join(room);
    assertOk(a.call("chat", "hi"), "delivered", 1);
    assertOk(a.call("roomcast:emit", m("room", room, "event", "chat", "args", List.of(2))), "recipients", 1);
    Map<String, Object> bad = map(a.call("roomcast:emit", m("room", room)));
    assertEquals(false, bad.get("ok"));
    assertEquals("bad_request", bad.get("error"));
    settleCounts(List.of(b, a), List.of(2, 0), "chat", "the events acknowledged");
  }

  @Test
  @Feature("ack-server")
  void acksHubToClient() {
    Peer a = connect("websocket");
    Peer b = connect("polling");
    for (Peer p : List.of(a, b)) p.answers.put("question", new Object[] {Hub.toOrgJson(m("answer", 42, "from", "java"))});
    Map<String, Object> res = mgmt("POST", "/v1/namespaces/%2F/emit",
        m("event", "question", "args", List.of(m("n", 41)), "socketIds", List.of(a.id(), b.id()), "ackTimeoutMs", 5000));
    assertEquals(2L, res.get("recipients"));
    assertEquals(false, res.get("timedOut"));
    @SuppressWarnings("unchecked")
    List<Map<String, Object>> acks = (List<Map<String, Object>>) res.get("acks");
    assertEquals(List.of(a.id(), b.id()).stream().sorted().toList(), acks.stream().map(x -> (String) x.get("socketId")).sorted().toList());
    for (Map<String, Object> x : acks) assertEquals(List.of(m("answer", 42L, "from", "java")), x.get("args"));
    assertEquals(List.of(List.of("question", m("n", 41L))), a.events("question"));
  }

  @Test
  @Feature("binary")
  void binaryBothWays() {
    String room = "room:bin-" + rand();
    Peer a = connect("websocket");
    Peer b = connect("polling");
    a.join(room);
    b.join(room);
    byte[] big = pattern(70_000, 3);
    assertOk(a.call("bin", pattern(16, 0), m("nested", big, "n", 1)), "delivered", 1);
    settleCounts(List.of(b), List.of(1), "bin", "binary relay");
    assertEquals(List.of(List.of("bin", Hub.Bytes.of(pattern(16, 0)), m("nested", Hub.Bytes.of(big), "n", 1L))), b.events("bin"));
    Peer c = connect("websocket");
    c.join(room);
    assertOk(c.call("bin", new byte[] {0, (byte) 255, (byte) 128}), "delivered", 2);
    settleCounts(List.of(a, b), List.of(1, 2), "bin", "binary relay back");
    assertEquals(List.of(List.of("bin", Hub.Bytes.of(new byte[] {0, (byte) 255, (byte) 128}))), a.events("bin"));
    a.answers.put("frame", new Object[] {new byte[] {9, 8, 7}});
    Map<String, Object> res = mgmt("POST", "/v1/namespaces/%2F/emit",
        m("event", "frame", "args", List.of(m("_binary", b64(new byte[] {1, 2, 3, 4})), "x"), "socketIds", List.of(a.id()), "ackTimeoutMs", 5000));
    assertEquals(false, res.get("timedOut"));
    @SuppressWarnings("unchecked")
    List<Map<String, Object>> acks = (List<Map<String, Object>>) res.get("acks");
    assertEquals(List.of(m("_binary", b64(new byte[] {9, 8, 7}))), acks.get(0).get("args"));
    assertEquals(List.of(List.of("frame", Hub.Bytes.of(new byte[] {1, 2, 3, 4}), "x")), a.events("frame"));

    // Binary sent on HTTP long-polling. socket.io-client-java 2.x writes it as Android-style
    // base64 with line breaks and a final newline ("b" + "AP+A\n"), which Node's engine.io
    // accepts (Buffer.from ignores them), and so does the hub.
    Object[] reply = b.callOrNull("bin", 3000, new byte[] {0, (byte) 255, (byte) 128});
    assertNotNull(reply, "binary sent on polling is acknowledged");
    assertOk(Hub.plain(reply[0]), "delivered", 2);
    settleCounts(List.of(a, c), List.of(2, 1), "bin", "binary sent on polling");
    assertEquals(List.of(List.of("bin", Hub.Bytes.of(new byte[] {0, (byte) 255, (byte) 128}))), c.events("bin"));
  }

  @Test
  @Feature("jwt")
  void jwtInAuth() {
    String sub = "jwt-" + rand();
    Peer a = connectAs("/", sub);
    String room = "room:jwt-" + rand();
    a.join(room);
    Map<String, Object> sock = fetchSockets("/", room).get(0);
    assertEquals(a.id(), sock.get("id"));
    assertEquals(sub, map(sock.get("claims")).get("sub"));
    assertEquals("roomcast-clients", map(sock.get("claims")).get("aud"));
    Peer.ConnectRefused missing = assertThrows(Peer.ConnectRefused.class, () -> peer("/", false).connect(proxy, Map.of()));
    assertEquals(m("message", "authentication token missing", "data", m("reason", "token_missing")), missing.error);
    String forged = token(m("sub", sub, "secret", "another-secret-another-secret-0000"));
    Peer.ConnectRefused bad = assertThrows(Peer.ConnectRefused.class, () -> peer("/", false).connect(proxy, Map.of("token", forged)));
    assertEquals("bad_signature", map(map(bad.error).get("data")).get("reason"));
    String expired = token(m("sub", sub, "expiresIn", -3600));
    Peer.ConnectRefused old = assertThrows(Peer.ConnectRefused.class, () -> peer("/", false).connect(proxy, Map.of("token", expired)));
    assertEquals("token_expired", map(map(old.error).get("data")).get("reason"));
  }

  @Test
  @Feature("reconnect")
  void reconnectAfterNodeKilled() {
    String room = "room:rc-" + rand();
    Peer mover = peer("/", true);
    List<Object> joins = new CopyOnWriteArrayList<>();
    // Rejoin on every connect, as an application does (without blocking the client's event thread).
    mover.onConnect.add(() -> mover.socket.emit("roomcast:join", new Object[] {room}, reply -> joins.add(Hub.plain(reply[0]))));
    mover.connect(proxy, Map.of("token", token("mover")));
    eventually(() -> joins.size() == 1, 5000, "first join");
    String first = mover.id();
    String killed = (String) map(control("POST", "/kill", m("socketId", first))).get("killed");
    assertEquals(ownerOf(first), killed);
    try {
      eventually(() -> mover.socket.connected() && joins.size() >= 2, 20_000, "reconnect and rejoin");
      assertEquals(OK, joins.get(joins.size() - 1));
      assertNotEquals(first, mover.id(), "a new socket");
      assertNotEquals(killed, ownerOf(mover.id()), "on a surviving member");
      assertTrue(mover.disconnects.get() >= 1);
      assertRecipients(mgmt("POST", "/v1/namespaces/%2F/emit", m("event", "after", "args", List.of("back"), "rooms", List.of(room))), 1);
      settleCounts(List.of(mover), List.of(1), "after", "a room message after the reconnect");
    } finally {
      control("POST", "/restore", m());
    }
  }
}
