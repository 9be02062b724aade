using System.Buffers;
using System.IO.Pipelines;
using System.Net.Sockets;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging;

namespace Potluck.Node.Control;

/// <summary>
/// Serves the control protocol (<see cref="ControlProtocol"/>) on <c>control.sock</c> in the data directory, readable
/// and writable by the owner only (0600: bound under a temporary name, restricted, then renamed into place). A stale
/// socket left by a crashed node is replaced; a live one means another node uses the data directory, and start fails.
/// </summary>
public sealed partial class ControlServer : IAsyncDisposable
{
    private static readonly JsonElement EmptyObject = JsonDocument.Parse("{}").RootElement.Clone();

    private readonly Dictionary<string, ControlHandler> _handlers = new(StringComparer.Ordinal);
    private readonly ControlOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger<ControlServer> _log;
    private readonly CancellationTokenSource _stop = new();
    private readonly Lock _gate = new();
    private readonly List<Task> _clients = [];
    private Socket? _listener;
    private Task? _accept;
    private int _active;

    public ControlServer(string dataDir, ControlOptions options, TimeProvider time, ILoggerFactory loggers)
    {
        DataDir = dataDir;
        SocketPath = ControlProtocol.SocketPath(dataDir);
        _options = options;
        _time = time;
        _log = loggers.CreateLogger<ControlServer>();
    }

    public string DataDir { get; }

    public string SocketPath { get; }

    /// <summary>Adds a method; call before <see cref="StartAsync"/>.</summary>
    public void Register(string method, ControlHandler handler)
    {
        ArgumentException.ThrowIfNullOrEmpty(method);
        lock (_gate)
        {
            _handlers[method] = handler;
        }
    }

    /// <summary>Binds the socket and starts answering.</summary>
    /// <exception cref="IOException">Another node is serving this data directory, or the path is unusable.</exception>
    public async Task StartAsync(CancellationToken ct)
    {
        Protocol.Runtime.OwnerOnly.CreateDirectory(DataDir);
        if (File.Exists(SocketPath) || Directory.Exists(SocketPath))
        {
            if (await IsLiveAsync(SocketPath, ct))
            {
                throw new IOException($"another potluck node is already running with data dir {DataDir} (its control socket {SocketPath} answers); stop it or use another --data-dir");
            }
            File.Delete(SocketPath);
        }
        var temporary = SocketPath + "." + Environment.ProcessId + ".tmp";
        File.Delete(temporary);
        UnixDomainSocketEndPoint endpoint;
        try
        {
            endpoint = new UnixDomainSocketEndPoint(temporary);
        }
        catch (ArgumentException)
        {
            throw new IOException($"the data dir path is too long for a control socket ({SocketPath}); use a shorter --data-dir");
        }
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            socket.Bind(endpoint);
            if (!OperatingSystem.IsWindows())
            {
                File.SetUnixFileMode(temporary, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            }
            File.Move(temporary, SocketPath, overwrite: true);
            socket.Listen(_options.MaxClients);
        }
        catch
        {
            socket.Dispose();
            File.Delete(temporary);
            throw;
        }
        _listener = socket;
        _accept = Task.Run(AcceptLoopAsync);
    }

    private static async Task<bool> IsLiveAsync(string path, CancellationToken ct)
    {
        using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            await probe.ConnectAsync(new UnixDomainSocketEndPoint(path), ct);
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    private async Task AcceptLoopAsync()
    {
        var ct = _stop.Token;
        while (!ct.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await _listener!.AcceptAsync(ct);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException)
            {
                return;
            }
            catch (SocketException e)
            {
                LogAcceptFailed(e.SocketErrorCode);
                continue;
            }
            lock (_gate)
            {
                _clients.RemoveAll(t => t.IsCompleted);
                _clients.Add(Task.Run(() => ServeAsync(client, ct)));
            }
        }
    }

    private async Task ServeAsync(Socket socket, CancellationToken ct)
    {
        await using var stream = new NetworkStream(socket, ownsSocket: true);
        var reader = PipeReader.Create(stream, new StreamPipeReaderOptions(leaveOpen: true));
        var writer = PipeWriter.Create(stream, new StreamPipeWriterOptions(leaveOpen: true));
        var busy = Interlocked.Increment(ref _active) > _options.MaxClients;
        try
        {
            if (busy)
            {
                await WriteErrorAsync(writer, ControlErrorCode.Busy, $"the node serves at most {_options.MaxClients} control clients at once; try again", ct);
                return;
            }
            while (true)
            {
                using var idle = new CancellationTokenSource(_options.IdleTimeout, _time);
                using var linked = CancellationTokenSource.CreateLinkedTokenSource(idle.Token, ct);
                var line = await ReadLineAsync(reader, _options.MaxRequestLength, linked.Token);
                if (line is null)
                {
                    return;
                }
                if (line.TooLong)
                {
                    await WriteErrorAsync(writer, ControlErrorCode.LineTooLong, $"a request line is at most {_options.MaxRequestLength} bytes", ct);
                    return;
                }
                await WriteResponseAsync(writer, await HandleAsync(line.Bytes, ct), ct);
            }
        }
        catch (Exception e) when (e is OperationCanceledException or IOException or ObjectDisposedException or SocketException)
        {
        }
        finally
        {
            Interlocked.Decrement(ref _active);
            await reader.CompleteAsync();
            await writer.CompleteAsync();
        }
    }

    internal sealed record Line(byte[] Bytes, bool TooLong);

    /// <summary>The next '\n'-terminated line (without it); null at end of stream; TooLong past <paramref name="max"/> bytes.</summary>
    internal static async ValueTask<Line?> ReadLineAsync(PipeReader reader, int max, CancellationToken ct)
    {
        while (true)
        {
            var result = await reader.ReadAsync(ct);
            var buffer = result.Buffer;
            var position = buffer.PositionOf((byte)'\n');
            if (position is { } end)
            {
                var line = buffer.Slice(0, end);
                if (line.Length > max)
                {
                    reader.AdvanceTo(buffer.Start, buffer.End);
                    return new Line([], true);
                }
                var bytes = line.ToArray();
                reader.AdvanceTo(buffer.GetPosition(1, end));
                return new Line(bytes, false);
            }
            if (buffer.Length > max)
            {
                reader.AdvanceTo(buffer.Start, buffer.End);
                return new Line([], true);
            }
            if (result.IsCompleted)
            {
                reader.AdvanceTo(buffer.End);
                return null;
            }
            reader.AdvanceTo(buffer.Start, buffer.End);
        }
    }

    /// <summary>Parses and dispatches one request line; returns the response object.</summary>
    internal async Task<JsonObject> HandleAsync(byte[] line, CancellationToken ct)
    {
        string method;
        JsonElement parameters;
        JsonDocument document;
        if (!System.Text.Unicode.Utf8.IsValid(line))
        {
            // JsonDocument checks string contents only when they are read: refuse bad UTF-8 up front.
            return Error(ControlErrorCode.BadRequest, "a request must be UTF-8");
        }
        try
        {
            document = JsonDocument.Parse(line, ControlProtocol.DocumentOptions);
        }
        catch (JsonException e)
        {
            return Error(ControlErrorCode.BadRequest, $"not JSON: {e.Message}");
        }
        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("method", out var m) || m.ValueKind != JsonValueKind.String)
            {
                return Error(ControlErrorCode.BadRequest, "a request is a JSON object with a string \"method\"");
            }
            method = m.GetString()!;
            if (root.TryGetProperty("params", out var p) && p.ValueKind is not (JsonValueKind.Object or JsonValueKind.Null))
            {
                return Error(ControlErrorCode.BadRequest, "\"params\" must be an object");
            }
            parameters = root.TryGetProperty("params", out p) && p.ValueKind == JsonValueKind.Object
                ? p.Clone()
                : EmptyObject;
        }
        ControlHandler? handler;
        lock (_gate)
        {
            _handlers.TryGetValue(method, out handler);
        }
        if (handler is null)
        {
            string known;
            lock (_gate)
            {
                known = string.Join(", ", _handlers.Keys.Order(StringComparer.Ordinal));
            }
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

    private static ValueTask WriteErrorAsync(PipeWriter writer, ControlErrorCode code, string message, CancellationToken ct) =>
        WriteResponseAsync(writer, Error(code, message), ct);

    internal static async ValueTask WriteResponseAsync(PipeWriter writer, JsonNode response, CancellationToken ct)
    {
        using (var json = new Utf8JsonWriter((IBufferWriter<byte>)writer))
        {
            response.WriteTo(json);
        }
        writer.Write("\n"u8);
        await writer.FlushAsync(ct);
    }

    public async ValueTask DisposeAsync()
    {
        if (_stop.IsCancellationRequested)
        {
            return;
        }
        _stop.Cancel();
        _listener?.Dispose();
        if (_accept is not null)
        {
            await _accept;
        }
        Task[] clients;
        lock (_gate)
        {
            clients = [.. _clients];
        }
        await Task.WhenAll(clients);
        if (_listener is not null)
        {
            try
            {
                File.Delete(SocketPath);
            }
            catch (IOException)
            {
            }
        }
        _stop.Dispose();
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Control socket accept failed: {Error}")]
    private partial void LogAcceptFailed(SocketError error);

    [LoggerMessage(Level = LogLevel.Error, Message = "Control method {Method} failed")]
    private partial void LogHandlerFailed(string method, Exception e);
}
