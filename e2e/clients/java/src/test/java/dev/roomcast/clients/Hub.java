package dev.roomcast.clients;

import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.function.BooleanSupplier;

import org.json.JSONArray;
import org.json.JSONException;
import org.json.JSONObject;

/**
 * The hub's control API (e2e/clients/stack.mjs), the management API through it, the results
 * file, and conversions of the client's values (org.json, byte[]) to plain Java values that
 * compare with equals.
 */
final class Hub {
  static final String CONTROL = env("ROOMCAST_CLIENTS_CONTROL");
  static final String RESULTS = env("ROOMCAST_CLIENTS_RESULTS");
  private static final HttpClient HTTP = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();

  private Hub() {}

  private static String env(String name) {
    String v = System.getenv(name);
    if (v == null || v.isEmpty()) {
      throw new IllegalStateException(name + " is not set: run this suite through e2e/clients/run.sh");
    }
    return v;
  }

  static synchronized void record(Map<String, Object> line) {
    try {
      Files.writeString(Path.of(RESULTS), toJson(line) + "\n", StandardCharsets.UTF_8,
          StandardOpenOption.CREATE, StandardOpenOption.APPEND);
    } catch (IOException e) {
      throw new RuntimeException(e);
    }
  }

  /** A control API call; fails unless HTTP 200. The answer, as plain Java values. */
  static Object control(String method, String route, Object body) {
    try {
      HttpRequest.Builder req = HttpRequest.newBuilder(URI.create(CONTROL + route))
          .timeout(Duration.ofSeconds(30))
          .header("content-type", "application/json");
      req.method(method, body == null ? HttpRequest.BodyPublishers.noBody()
          : HttpRequest.BodyPublishers.ofString(toJson(body)));
      HttpResponse<String> res = HTTP.send(req.build(), HttpResponse.BodyHandlers.ofString());
      if (res.statusCode() != 200) {
        throw new AssertionError("control " + route + ": " + res.statusCode() + " " + res.body());
      }
      return plain(new JSONObject(res.body()));
    } catch (IOException | InterruptedException | JSONException e) {
      throw new RuntimeException(e);
    }
  }

  @SuppressWarnings("unchecked")
  static Map<String, Object> map(Object o) {
    return (Map<String, Object>) o;
  }

  static String proxy() {
    return (String) map(control("GET", "/info", null)).get("proxy");
  }

  static String token(Map<String, Object> claims) {
    return (String) map(control("POST", "/token", claims)).get("token");
  }

  static String token(String sub) {
    return token(Map.of("sub", sub));
  }

  /** A management API call on a live member; asserts HTTP 200 and returns the body. */
  static Map<String, Object> mgmt(String method, String path, Object body) {
    Map<String, Object> req = new TreeMap<>();
    req.put("method", method);
    req.put("path", path);
    if (body != null) req.put("body", body);
    Map<String, Object> res = map(control("POST", "/mgmt", req));
    if (!Long.valueOf(200).equals(res.get("status"))) {
      throw new AssertionError(method + " " + path + ": " + res);
    }
    return map(res.get("body"));
  }

  @SuppressWarnings("unchecked")
  static List<Map<String, Object>> fetchSockets(String namespace, String room) {
    String ns = namespace.replace("/", "%2F");
    Object sockets = mgmt("POST", "/v1/namespaces/" + ns + "/sockets/fetch", Map.of("rooms", List.of(room))).get("sockets");
    return (List<Map<String, Object>>) sockets;
  }

  static String ownerOf(String socketId) {
    return new String(Base64.getUrlDecoder().decode(socketId.substring(16)), StandardCharsets.UTF_8);
  }

  static String rand() {
    return Long.toString(Double.doubleToLongBits(Math.random()) & 0xffffffffL, 36);
  }

  static byte[] pattern(int n, int seed) {
    byte[] b = new byte[n];
    for (int i = 0; i < n; i++) b[i] = (byte) ((i * 7 + seed) & 0xff);
    return b;
  }

  static String b64(byte[] b) {
    return Base64.getEncoder().encodeToString(b);
  }

  static void eventually(BooleanSupplier cond, long ms, String what) {
    long deadline = System.currentTimeMillis() + ms;
    while (!cond.getAsBoolean()) {
      if (System.currentTimeMillis() > deadline) {
        throw new AssertionError("timed out after " + ms + " ms waiting for " + what);
      }
      sleep(50);
    }
  }

  static void sleep(long ms) {
    try {
      Thread.sleep(ms);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new RuntimeException(e);
    }
  }

  /** A byte[] that compares by content (what binary values turn into in plain()). */
  record Bytes(String base64) {
    static Bytes of(byte[] b) {
      return new Bytes(Base64.getEncoder().encodeToString(b));
    }
  }

  /** org.json values and byte[] to Map (sorted), List, Long, Double, String, Boolean, null, Bytes. */
  static Object plain(Object o) {
    try {
      if (o == null || o == JSONObject.NULL) return null;
      if (o instanceof byte[] b) return Bytes.of(b);
      if (o instanceof JSONObject obj) {
        Map<String, Object> m = new TreeMap<>();
        for (Iterator<?> it = obj.keys(); it.hasNext(); ) {
          String k = (String) it.next();
          m.put(k, plain(obj.get(k)));
        }
        return m;
      }
      if (o instanceof JSONArray arr) {
        List<Object> l = new ArrayList<>();
        for (int i = 0; i < arr.length(); i++) l.add(plain(arr.get(i)));
        return l;
      }
      if (o instanceof Integer i) return i.longValue();
      if (o instanceof Long || o instanceof String || o instanceof Boolean) return o;
      if (o instanceof Number n) {
        double d = n.doubleValue();
        return d == Math.rint(d) ? (Object) (long) d : (Object) d;
      }
      return o;
    } catch (JSONException e) {
      throw new RuntimeException(e);
    }
  }

  /** Plain Java values (Map, List, String, Number, Boolean, null) to JSON text. */
  static String toJson(Object o) {
    return String.valueOf(toOrgJson(o));
  }

  /** Plain Java values to org.json values (byte[] stays byte[], so the client sends it as binary). */
  static Object toOrgJson(Object o) {
    try {
      if (o == null) return JSONObject.NULL;
      if (o instanceof Map<?, ?> m) {
        JSONObject obj = new JSONObject();
        for (Map.Entry<?, ?> e : m.entrySet()) obj.put((String) e.getKey(), toOrgJson(e.getValue()));
        return obj;
      }
      if (o instanceof List<?> l) {
        JSONArray arr = new JSONArray();
        for (Object x : l) arr.put(toOrgJson(x));
        return arr;
      }
      if (o instanceof String s) return s;
      return o;
    } catch (JSONException e) {
      throw new RuntimeException(e);
    }
  }
}
