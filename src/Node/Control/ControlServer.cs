using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Potluck.Node.Control;

/// <summary>
/// The local control API (<see cref="ControlProtocol"/>): HTTP on a loopback address, on Kestrel, every request carrying
/// the token kept in <c>control.token</c> in the data directory (owner-only, 0600; made once and kept, so a Prometheus
/// scrape configuration stays valid across restarts), as Kubo's RPC authorisations do. Where the node listens is written
/// to <c>control.json</c> in the data directory (owner-only) while it runs, which is how the CLI finds it. A lock on
/// <c>node.lock</c> keeps a second node off the same data directory.
/// </summary>
public sealed partial class ControlServer : IAsyncDisposable
{
    private static readonly JsonElement EmptyObject = JsonDocument.Parse("{}").RootElement.Clone();

    private readonly Dictionary<string, ControlHandler> _handlers = new(StringComparer.Ordinal);
    private readonly ControlOptions _options;
    private readonly ILoggerFactory _loggers;
    private readonly ILogger<ControlServer> _log;
    private readonly Lock _gate = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly ControlAdmission _admission;
    private WebApplication? _app;
    private FileStream? _lock;
    private byte[] _token = [];
    private Func<HttpContext, Task>? _metrics;

    public ControlServer(string dataDir, ControlOptions options, ILoggerFactory loggers)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(options.MaxClients, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(options.MaxQueued);
        DataDir = Path.GetFullPath(dataDir);
        _options = options;
        _admission = new ControlAdmission(options.MaxClients, options.MaxQueued);
        _loggers = loggers;
        _log = loggers.CreateLogger<ControlServer>();
    }

    public string DataDir { get; }

    /// <summary>The base address it serves, e.g. http://127.0.0.1:4101/ (set by <see cref="StartAsync"/>).</summary>
    public Uri? Address { get; private set; }

    /// <summary>The token clients must send (<c>Authorization: Bearer …</c>).</summary>
    public string Token => Encoding.ASCII.GetString(_token);

    /// <summary>Adds a method; call before or after <see cref="StartAsync"/>.</summary>
    public void Register(string method, ControlHandler handler)
    {
        ArgumentException.ThrowIfNullOrEmpty(method);
        lock (_gate)
        {
            _handlers[method] = handler;
        }
    }

    /// <summary>Serves <c>GET /metrics</c> from <paramref name="exporter"/> (Prometheus text format); without the token when <paramref name="open"/>.</summary>
    public void MapMetrics(MetricsExporter exporter, bool open)
    {
        _openMetrics = open;
        var factory = global::Prometheus.Metrics.WithCustomRegistry(exporter.Registry);
        var refused = factory.CreateCounter("potluck_control_refused_total", "Control API requests answered 503 (busy) because its work queue was full");
        var inFlight = factory.CreateGauge("potluck_control_requests_in_flight", "Control API requests being worked on now");
        exporter.Registry.AddBeforeCollectCallback(() =>
        {
            refused.IncTo(Refused);
            inFlight.Set(InFlight);
        });
        _metrics = async http =>
        {
            http.Response.ContentType = "text/plain; version=0.0.4; charset=utf-8";
            await exporter.WriteAsync(http.Response.Body, http.RequestAborted);
        };
    }

    private bool _openMetrics;

    /// <summary>What <c>POST /api/v1/blob.put</c> (the raw bytes as the body) stores, for methods such as <c>submit</c>.</summary>
    public BlobStore Blobs => _blobs ??= new BlobStore(_options);

    private BlobStore? _blobs;

    /// <summary>The method that takes raw bytes rather than JSON: answers <c>{"sha256": hex, "size": n}</c>.</summary>
    public const string BlobPutMethod = "blob.put";

    /// <summary>Takes the data directory's lock, makes or reads the token, starts listening and writes <c>control.json</c>.</summary>
    /// <exception cref="IOException">Another node uses this data directory, the address is taken, or a file is unusable.</exception>
    public async Task StartAsync(CancellationToken ct)
    {
        Protocol.Runtime.OwnerOnly.CreateDirectory(DataDir);
        _lock = ControlFiles.LockDataDir(DataDir);
        try
        {
            _token = ControlFiles.LoadOrCreateToken(DataDir);
            var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions { ApplicationName = "potluck-control" });
            builder.Services.AddSingleton<ILoggerFactory>(new FilteredLoggers(_loggers));
            builder.Services.AddSingleton(typeof(ILogger<>), typeof(Logger<>));
            builder.WebHost.UseKestrelCore().ConfigureKestrel(k =>
            {
                k.AddServerHeader = false;
                k.Limits.MaxConcurrentConnections = _options.MaxConnections;
                k.Limits.MaxRequestBodySize = _options.MaxRequestLength;
                k.Limits.MaxRequestHeadersTotalSize = 16 * 1024;
                k.Limits.MaxRequestHeaderCount = 32;
                k.Limits.MaxRequestLineSize = 4096;
                k.Limits.KeepAliveTimeout = _options.IdleTimeout;
                k.Limits.RequestHeadersTimeout = TimeSpan.FromSeconds(10);
                k.Listen(_options.Endpoint, l => l.Protocols = HttpProtocols.Http1);
            });
            var app = builder.Build();
            app.Run(ServeAsync);
            try
            {
                await app.StartAsync(ct);
            }
            catch (IOException e) when (e.InnerException is System.Net.Sockets.SocketException { SocketErrorCode: System.Net.Sockets.SocketError.AddressAlreadyInUse }
                                         || e.Message.Contains("address already in use", StringComparison.OrdinalIgnoreCase))
            {
                await app.DisposeAsync();
                throw new IOException($"the control API's address {_options.Endpoint} is in use (another program, or another potluck node): " +
                    $"set another with 'control:listen', e.g. --control-listen 127.0.0.1:{_options.Endpoint.Port + 1}, or 127.0.0.1:0 for any free port", e);
            }
            _app = app;
            var bound = app.Services.GetRequiredService<Microsoft.AspNetCore.Hosting.Server.IServer>()
                .Features.Get<Microsoft.AspNetCore.Hosting.Server.Features.IServerAddressesFeature>()!.Addresses.First();
            Address = new Uri(bound.EndsWith('/') ? bound : bound + "/");
            ControlFiles.WriteEndpoint(DataDir, Address);
        }
        catch
        {
            _lock.Dispose();
            _lock = null;
            throw;
        }
    }

    private async Task ServeAsync(HttpContext http)
    {
        var ct = CancellationTokenSource.CreateLinkedTokenSource(http.RequestAborted, _stop.Token).Token;
        http.Response.Headers.CacheControl = "no-store";
        var isMetrics = http.Request.Path.Value == "/metrics" && HttpMethods.IsGet(http.Request.Method) && _metrics is not null;
        if (!(isMetrics && _openMetrics) && !Authorized(http.Request))
        {
            await WriteAsync(http, StatusCodes.Status401Unauthorized,
                Error(ControlErrorCode.Unauthorized, $"missing or wrong token: send 'Authorization: Bearer <the contents of {ControlFiles.TokenPath(DataDir)}>'"), ct);
            return;
        }
        if (!_admission.TryEnter())
        {
            http.Response.Headers.RetryAfter = _options.RetryAfterSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture);
            await WriteAsync(http, StatusCodes.Status503ServiceUnavailable,
                Error(ControlErrorCode.Busy, $"the node's control API is busy ({_options.MaxClients} requests in progress, {_options.MaxQueued} waiting): try again in {_options.RetryAfterSeconds} s"), ct);
            return;
        }
        try
        {
            await _admission.WaitAsync(ct);
        }
        catch (OperationCanceledException)
        {
            _admission.Leave(entered: false);
            return;
        }
        try
        {
            await ServeAdmittedAsync(http, ct);
        }
        finally
        {
            _admission.Leave(entered: true);
        }
    }

    /// <summary>Requests refused as busy (HTTP 503) since the server started.</summary>
    public long Refused => _admission.Refused;

    /// <summary>Requests being worked on now.</summary>
    public int InFlight => _admission.InFlight;

    private async Task ServeAdmittedAsync(HttpContext http, CancellationToken ct)
    {
        var path = http.Request.Path.Value ?? "";
        if (path == "/metrics" && HttpMethods.IsGet(http.Request.Method) && _metrics is { } metrics)
        {
            await metrics(http);
            return;
        }
        if (!path.StartsWith(ControlProtocol.ApiPrefix, StringComparison.Ordinal) || !HttpMethods.IsPost(http.Request.Method))
        {
            await WriteAsync(http, StatusCodes.Status404NotFound,
                Error(ControlErrorCode.UnknownMethod, $"the control API is POST {ControlProtocol.ApiPrefix}<method> with a JSON object of parameters, and GET /metrics"), ct);
            return;
        }
        var method = Uri.UnescapeDataString(path[ControlProtocol.ApiPrefix.Length..]);
        var isBlob = method == BlobPutMethod;
        if (isBlob && http.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } size)
        {
            size.MaxRequestBodySize = _options.MaxBlobBytes;
        }
        byte[] body;
        try
        {
            body = await ReadBodyAsync(http, isBlob ? _options.MaxBlobBytes : _options.MaxRequestLength, ct);
        }
        catch (Microsoft.AspNetCore.Http.BadHttpRequestException e) when (e.StatusCode == StatusCodes.Status413PayloadTooLarge)
        {
            await WriteAsync(http, StatusCodes.Status413PayloadTooLarge,
                Error(ControlErrorCode.LineTooLong, $"a request is at most {(isBlob ? _options.MaxBlobBytes : _options.MaxRequestLength)} bytes"), ct);
            return;
        }
        if (isBlob)
        {
            var hash = Blobs.Put(body);
            await WriteAsync(http, StatusCodes.Status200OK, new JsonObject { ["ok"] = true, ["result"] = new JsonObject { ["sha256"] = hash, ["size"] = body.Length } }, ct);
            return;
        }
        var response = await HandleAsync(method, body, ct);
        var status = response["ok"]!.GetValue<bool>() ? StatusCodes.Status200OK : StatusOf(response);
        await WriteAsync(http, status, response, ct);
    }

    private static int StatusOf(JsonObject response) => ControlException.FromWire(response["error"]?["code"]?.GetValue<string>()) switch
    {
        ControlErrorCode.BadRequest => 400,
        ControlErrorCode.UnknownMethod => 404,
        ControlErrorCode.LineTooLong => 413,
        ControlErrorCode.Busy or ControlErrorCode.Unavailable => 503,
        ControlErrorCode.Unauthorized => 401,
        _ => 500,
    };

    private bool Authorized(HttpRequest request)
    {
        var header = request.Headers.Authorization.ToString();
        const string bearer = "Bearer ";
        if (!header.StartsWith(bearer, StringComparison.Ordinal) || header.Length - bearer.Length > 256)
        {
            return false;
        }
        var given = Encoding.ASCII.GetBytes(header[bearer.Length..].Trim());
        return CryptographicOperations.FixedTimeEquals(given, _token);
    }

    private static async Task<byte[]> ReadBodyAsync(HttpContext http, int limit, CancellationToken ct)
    {
        using var buffer = new MemoryStream();
        var chunk = new byte[8192];
        int read;
        while ((read = await http.Request.Body.ReadAsync(chunk, ct)) > 0)
        {
            if (buffer.Length + read > limit)
            {
                throw new Microsoft.AspNetCore.Http.BadHttpRequestException("too large", StatusCodes.Status413PayloadTooLarge);
            }
            buffer.Write(chunk, 0, read);
        }
        return buffer.ToArray();
    }

    private static async Task WriteAsync(HttpContext http, int status, JsonNode response, CancellationToken ct)
    {
        http.Response.StatusCode = status;
        http.Response.ContentType = "application/json; charset=utf-8";
        await using (var json = new Utf8JsonWriter(http.Response.BodyWriter))
        {
            response.WriteTo(json);
        }
        System.Buffers.BuffersExtensions.Write(http.Response.BodyWriter, "\n"u8);
        await http.Response.BodyWriter.FlushAsync(ct);
    }

    /// <summary>Parses the parameters and dispatches one call; returns the response object.</summary>
    internal async Task<JsonObject> HandleAsync(string method, byte[] body, CancellationToken ct)
    {
        JsonElement parameters = EmptyObject;
        if (body.Length > 0)
        {
            if (!System.Text.Unicode.Utf8.IsValid(body))
            {
                // JsonDocument checks string contents only when they are read: refuse bad UTF-8 up front.
                return Error(ControlErrorCode.BadRequest, "a request must be UTF-8");
            }
            try
            {
                using var document = JsonDocument.Parse(body, ControlProtocol.DocumentOptions);
                if (document.RootElement.ValueKind is not (JsonValueKind.Object or JsonValueKind.Null))
                {
                    return Error(ControlErrorCode.BadRequest, "the parameters must be a JSON object");
                }
                parameters = document.RootElement.ValueKind == JsonValueKind.Object ? document.RootElement.Clone() : EmptyObject;
            }
            catch (JsonException e)
            {
                return Error(ControlErrorCode.BadRequest, $"not JSON: {e.Message}");
            }
        }
        ControlHandler? handler;
        string known;
        lock (_gate)
        {
            _handlers.TryGetValue(method, out handler);
            known = string.Join(", ", _handlers.Keys.Order(StringComparer.Ordinal));
        }
        if (handler is null)
        {
            return Error(ControlErrorCode.UnknownMethod, $"unknown method '{Truncate(method)}' (this node knows: {known})");
        }
        try
        {
            var result = await handler(parameters, ct);
            return new JsonObject { ["ok"] = true, ["result"] = result };
        }
        catch (ControlException e)
        {
            return Error(e.Code, e.Message);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            return Error(ControlErrorCode.Unavailable, "the node is shutting down");
        }
        catch (Exception e)
        {
            LogHandlerFailed(Truncate(method), e);
            return Error(ControlErrorCode.Internal, $"the node failed to answer '{Truncate(method)}'; see its log");
        }
    }

    private static string Truncate(string s) => s.Length <= 64 ? s : s[..64] + "…";

    private static JsonObject Error(ControlErrorCode code, string message) => new()
    {
        ["ok"] = false,
        ["error"] = new JsonObject { ["code"] = ControlException.ToWire(code), ["message"] = message },
    };

    public async ValueTask DisposeAsync()
    {
        if (_stop.IsCancellationRequested)
        {
            return;
        }
        _stop.Cancel();
        if (_app is not null)
        {
            ControlFiles.DeleteEndpoint(DataDir);
            await _app.StopAsync(TimeSpan.FromSeconds(5) is var t ? new CancellationTokenSource(t).Token : default);
            await _app.DisposeAsync();
        }
        _lock?.Dispose();
        _stop.Dispose();
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "Control method {Method} failed")]
    private partial void LogHandlerFailed(string method, Exception e);

    /// <summary>Kestrel's own request lines stay out of the node's log; its warnings and errors stay in.</summary>
    private sealed class FilteredLoggers(ILoggerFactory inner) : ILoggerFactory
    {
        public ILogger CreateLogger(string categoryName) =>
            categoryName.StartsWith("Microsoft.AspNetCore", StringComparison.Ordinal) ? new WarningsOnly(inner.CreateLogger(categoryName)) : inner.CreateLogger(categoryName);

        public void AddProvider(ILoggerProvider provider) => inner.AddProvider(provider);

        public void Dispose()
        {
        }
    }

    private sealed class WarningsOnly(ILogger inner) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => inner.BeginScope(state);

        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Warning && inner.IsEnabled(logLevel);

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (IsEnabled(logLevel))
            {
                inner.Log(logLevel, eventId, state, exception, formatter);
            }
        }
    }
}
