using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Potluck.Node.Control;

/// <summary>
/// Talks to the node running on a data directory over its control API (<see cref="ControlProtocol"/>): finds it through
/// <c>control.json</c>, authenticates with <c>control.token</c>. What `potluck status`, `peers`, `leases`, `ledger`,
/// `config` and `submit` use.
/// </summary>
public sealed class ControlClient : IAsyncDisposable
{
    private readonly HttpClient _http;
    private readonly ControlOptions _options;

    private readonly TimeProvider _time;

    private ControlClient(HttpClient http, ControlOptions options, string dataDir, TimeProvider time)
    {
        _http = http;
        _options = options;
        DataDir = dataDir;
        _time = time;
    }

    /// <summary>Calls the node refused as busy (HTTP 503 with Retry-After) and retried.</summary>
    public long BusyRetried => Interlocked.Read(ref _busyRetried);

    private long _busyRetried;

    public string DataDir { get; }

    public Uri Address => _http.BaseAddress!;

    /// <summary>Finds the node serving <paramref name="dataDir"/>; it is not contacted until the first call.</summary>
    /// <exception cref="NodeNotRunningException">No node runs there (no control.json or token).</exception>
    public static Task<ControlClient> ConnectAsync(string dataDir, ControlOptions? options, CancellationToken ct)
    {
        var address = ControlFiles.ReadEndpoint(dataDir);
        var token = ControlFiles.ReadToken(dataDir);
        return Task.FromResult(Create(address, token, dataDir, options));
    }

    /// <summary>A client for <paramref name="address"/> with <paramref name="token"/> (tests: a wrong one).</summary>
    public static ControlClient Create(Uri address, string token, string dataDir, ControlOptions? options = null, TimeProvider? time = null)
    {
        options ??= new ControlOptions();
        // Fewer connections than the node serves at once, so a batch's long `submit` calls leave room for the rest.
        var http = new HttpClient(new SocketsHttpHandler { UseProxy = false, ConnectTimeout = TimeSpan.FromSeconds(5), MaxConnectionsPerServer = Math.Max(1, options.MaxClients - 4) })
        {
            BaseAddress = address,
            Timeout = Timeout.InfiniteTimeSpan,
            MaxResponseContentBufferSize = options.MaxResponseLength,
        };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
        return new ControlClient(http, options, dataDir, time ?? TimeProvider.System);
    }

    /// <summary>Calls <paramref name="method"/>; returns its result.</summary>
    /// <exception cref="ControlException">The node answered with an error (typed by its code).</exception>
    /// <exception cref="NodeNotRunningException">Nobody listens where control.json says (a node that crashed).</exception>
    /// <exception cref="IOException">The answer was not a control response.</exception>
    public async Task<JsonNode?> CallAsync(string method, JsonObject? parameters, CancellationToken ct)
    {
        var json = (parameters ?? new JsonObject()).ToJsonString();
        using var response = await PostAsync(ControlProtocol.ApiPrefix.TrimStart('/') + Uri.EscapeDataString(method),
            () => new StringContent(json, Encoding.UTF8, "application/json"), ct);
        byte[] bytes;
        try
        {
            bytes = await response.Content.ReadAsByteArrayAsync(ct);
        }
        catch (HttpRequestException e)
        {
            throw new IOException($"the node's answer to '{method}' broke off or is longer than {_options.MaxResponseLength} bytes: {e.Message}", e);
        }
        return Parse(method, bytes, response.StatusCode);
    }

    private static JsonNode? Parse(string method, byte[] bytes, HttpStatusCode status)
    {
        JsonNode? node;
        try
        {
            node = JsonNode.Parse(bytes, documentOptions: ControlProtocol.DocumentOptions);
        }
        catch (JsonException e)
        {
            throw new IOException($"the node's answer to '{method}' is not JSON (HTTP {(int)status}): {e.Message}", e);
        }
        if (node is not JsonObject o || o["ok"]?.GetValueKind() is not (JsonValueKind.True or JsonValueKind.False))
        {
            throw new IOException($"the node's answer to '{method}' is not a control response (HTTP {(int)status})");
        }
        if (o["ok"]!.GetValue<bool>())
        {
            return o["result"];
        }
        var error = o["error"] as JsonObject;
        var code = error?["code"] is JsonValue c && c.TryGetValue<string>(out var s) ? s : null;
        var message = error?["message"] is JsonValue m && m.TryGetValue<string>(out var t) ? t : "unknown error";
        throw new ControlException(ControlException.FromWire(code), message);
    }

    /// <summary>Calls <paramref name="method"/> and reads the result as <typeparamref name="T"/>.</summary>
    public async Task<T> CallAsync<T>(string method, JsonObject? parameters, System.Text.Json.Serialization.Metadata.JsonTypeInfo<T> type, CancellationToken ct)
    {
        var result = await CallAsync(method, parameters, ct);
        try
        {
            return result.Deserialize(type) ?? throw new IOException($"the node answered '{method}' with no result");
        }
        catch (JsonException e)
        {
            throw new IOException($"the node's answer to '{method}' has an unexpected shape: {e.Message}", e);
        }
    }

    /// <summary>Hands <paramref name="bytes"/> to the node (<see cref="ControlServer.BlobPutMethod"/>); returns their SHA-256 (hex).</summary>
    public async Task<string> PutBlobAsync(ReadOnlyMemory<byte> bytes, CancellationToken ct)
    {
        using var response = await PostAsync(ControlProtocol.ApiPrefix.TrimStart('/') + ControlServer.BlobPutMethod, () =>
        {
            var content = new ReadOnlyMemoryContent(bytes);
            content.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
            return content;
        }, ct);
        var result = Parse(ControlServer.BlobPutMethod, await response.Content.ReadAsByteArrayAsync(ct), response.StatusCode);
        return result?["sha256"] is JsonValue v && v.TryGetValue<string>(out var hash) ? hash
            : throw new IOException($"the node's answer to '{ControlServer.BlobPutMethod}' has no sha256");
    }

    /// <summary>
    /// POSTs a fresh body from <paramref name="content"/>; when the node answers 503 with Retry-After (its work queue is
    /// full) waits that long (at most 10 s) and tries again, up to <see cref="ControlOptions.BusyRetries"/> times, then
    /// returns the last 503 (a typed <see cref="ControlErrorCode.Busy"/> to the caller).
    /// </summary>
    private async Task<HttpResponseMessage> PostAsync(string path, Func<HttpContent> content, CancellationToken ct)
    {
        for (var attempt = 0; ; attempt++)
        {
            HttpResponseMessage response;
            using (var body = content())
            {
                try
                {
                    response = await _http.PostAsync(path, body, ct);
                }
                catch (HttpRequestException e) when (e.HttpRequestError is HttpRequestError.ConnectionError)
                {
                    throw new NodeNotRunningException(DataDir);
                }
            }
            if (response.StatusCode != HttpStatusCode.ServiceUnavailable || attempt >= _options.BusyRetries
                || response.Headers.RetryAfter?.Delta is not { } wait)
            {
                return response;
            }
            response.Dispose();
            Interlocked.Increment(ref _busyRetried);
            await Task.Delay(TimeSpan.FromSeconds(Math.Clamp(wait.TotalSeconds, 0.05, 10)), _time, ct);
        }
    }

    /// <summary>GET /metrics: the Prometheus text.</summary>
    public async Task<string> MetricsAsync(CancellationToken ct)
    {
        try
        {
            using var response = await _http.GetAsync("metrics", ct);
            var text = await response.Content.ReadAsStringAsync(ct);
            return response.IsSuccessStatusCode ? text : throw new IOException($"/metrics answered HTTP {(int)response.StatusCode}: {text.Trim()}");
        }
        catch (HttpRequestException e) when (e.HttpRequestError is HttpRequestError.ConnectionError)
        {
            throw new NodeNotRunningException(DataDir);
        }
    }

    public ValueTask DisposeAsync()
    {
        _http.Dispose();
        return ValueTask.CompletedTask;
    }
}
