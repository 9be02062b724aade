using System.IO.Pipelines;
using System.Net.Sockets;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Potluck.Node.Control;

/// <summary>
/// Talks to a running node over its control socket (<see cref="ControlProtocol"/>): one connection, requests answered
/// in order. What `potluck peers` (and later `submit`, `ledger`, `status`) use.
/// </summary>
public sealed class ControlClient : IAsyncDisposable
{
    private readonly NetworkStream _stream;
    private readonly PipeReader _reader;
    private readonly PipeWriter _writer;
    private readonly ControlOptions _options;
    private readonly SemaphoreSlim _one = new(1, 1);

    private ControlClient(NetworkStream stream, ControlOptions options)
    {
        _stream = stream;
        _options = options;
        _reader = PipeReader.Create(stream, new StreamPipeReaderOptions(leaveOpen: true));
        _writer = PipeWriter.Create(stream, new StreamPipeWriterOptions(leaveOpen: true));
    }

    /// <summary>Connects to the node serving <paramref name="dataDir"/>.</summary>
    /// <exception cref="NodeNotRunningException">No socket there, or nobody answers on it.</exception>
    public static async Task<ControlClient> ConnectAsync(string dataDir, ControlOptions? options, CancellationToken ct)
    {
        var path = ControlProtocol.SocketPath(dataDir);
        if (!File.Exists(path))
        {
            throw new NodeNotRunningException(dataDir);
        }
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(path), ct);
        }
        catch (Exception e) when (e is SocketException or ArgumentException)
        {
            socket.Dispose();
            throw new NodeNotRunningException(dataDir);
        }
        return new ControlClient(new NetworkStream(socket, ownsSocket: true), options ?? new ControlOptions());
    }

    /// <summary>Calls <paramref name="method"/>; returns its result.</summary>
    /// <exception cref="ControlException">The node answered with an error (typed by its code).</exception>
    /// <exception cref="IOException">The connection broke, or the answer was not a control response.</exception>
    public async Task<JsonNode?> CallAsync(string method, JsonObject? parameters, CancellationToken ct)
    {
        await _one.WaitAsync(ct);
        try
        {
            var request = new JsonObject { ["method"] = method, ["params"] = parameters ?? new JsonObject() };
            await ControlServer.WriteResponseAsync(_writer, request, ct);
            var line = await ControlServer.ReadLineAsync(_reader, _options.MaxResponseLength, ct)
                ?? throw new IOException("the node closed the control connection without answering");
            if (line.TooLong)
            {
                throw new IOException($"the node's answer is longer than {_options.MaxResponseLength} bytes");
            }
            if (!System.Text.Unicode.Utf8.IsValid(line.Bytes))
            {
                throw new IOException("the node's answer is not UTF-8");
            }
            JsonNode? response;
            try
            {
                response = JsonNode.Parse(line.Bytes, documentOptions: ControlProtocol.DocumentOptions);
            }
            catch (JsonException e)
            {
                throw new IOException($"the node's answer is not JSON: {e.Message}", e);
            }
            if (response is not JsonObject o || o["ok"]?.GetValueKind() is not (JsonValueKind.True or JsonValueKind.False))
            {
                throw new IOException("the node's answer is not a control response");
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
        finally
        {
            _one.Release();
        }
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

    public async ValueTask DisposeAsync()
    {
        await _reader.CompleteAsync();
        await _writer.CompleteAsync();
        await _stream.DisposeAsync();
        _one.Dispose();
    }
}
