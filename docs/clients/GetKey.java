// Ask camskeyd for phone numbers' encryption public keys (Java 11+ standard library only).
//
//   javac GetKey.java && CAMSKEYD_URL=http://127.0.0.1:8080 java GetKey 8613912345678 [MORE ...]
//
// A timeout longer than camskeyd's wait limit; on 503 wait Retry-After seconds and try
// again (a few times); keep the ETag and revalidate with If-None-Match (304: the copy
// you hold is still the key). The JSON is read with a small pattern to stay within the
// standard library; use your JSON library in real code.
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

public class GetKey {
    static final String BASE = System.getenv().getOrDefault("CAMSKEYD_URL", "http://127.0.0.1:8080");
    static final Duration TIMEOUT = Duration.ofSeconds(15);
    static final int ATTEMPTS = 4;
    static final HttpClient HTTP = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(2)).build();

    static HttpResponse<String> getKey(String phone, String etag) throws Exception {
        for (int attempt = 1; ; attempt++) {
            HttpRequest.Builder b = HttpRequest.newBuilder(
                    URI.create(BASE + "/v1/phone-numbers/" + phone + "/encryption-public-key"))
                .timeout(TIMEOUT);
            if (etag != null)
                b.header("If-None-Match", etag);
            HttpResponse<String> r = HTTP.send(b.build(), HttpResponse.BodyHandlers.ofString());
            if (r.statusCode() == 200 || r.statusCode() == 304)
                return r;
            if (r.statusCode() == 503 && attempt < ATTEMPTS) {
                long wait = Long.parseLong(r.headers().firstValue("Retry-After").orElse("1"));
                System.out.println(phone + ": " + field(r.body(), "Code") + ", retrying after " + wait + " s");
                Thread.sleep(wait * 1000);
                continue;
            }
            throw new RuntimeException(phone + ": HTTP " + r.statusCode() + " " + field(r.body(), "Code"));
        }
    }

    static String field(String json, String name) {
        Matcher m = Pattern.compile("\"" + name + "\":\"((?:[^\"\\\\]|\\\\.)*)\"").matcher(json);
        return m.find() ? m.group(1).replace("\\n", "\n").replace("\\/", "/") : "";
    }

    public static void main(String[] args) throws Exception {
        for (String phone : args) {
            HttpResponse<String> r = getKey(phone, null);
            String etag = r.headers().firstValue("ETag").orElse(null);
            System.out.println(phone + ": " + field(r.body(), "EncryptionPublicKeyStatus") + " key, ETag " + etag);
            System.out.println(field(r.body(), "EncryptionPublicKey"));
            HttpResponse<String> again = getKey(phone, etag);
            System.out.println(phone + ": revalidated: " + (again.statusCode() == 304 ? "unchanged (304)" : "changed"));
        }
    }
}
