using System.Globalization;
using System.Net.Sockets;
using System.Text;

namespace Potluck.Node.Interop;

/// <summary>A reply that Redis sent as an error (<c>-ERR …</c>).</summary>
internal sealed class RedisException(string message) : Exception(message);

/// <summary>
/// The few Redis commands the transport-interop contract uses (RPUSH, BLPOP, DEL), spoken as RESP2
/// (https://redis.io/docs/latest/develop/reference/protocol-spec/): a request is an array of bulk strings; a reply is a
/// simple string, error, integer, bulk string or array. Every length in a reply is checked against a bound before
/// anything is allocated; a malformed reply is an <see cref="InvalidDataException"/>.
/// </summary>
internal sealed class RespClient : IAsyncDisposable
{
    /// <summary>Longest bulk string or line accepted from the server: a multiaddr is far shorter.</summary>
    public const int MaxBulkLength = 64 * 1024;

    /// <summary>Most elements in an array reply (BLPOP answers two).</summary>
    public const int MaxArrayLength = 64;

    private readonly TcpClient _client;
    private readonly NetworkStream _stream;
    private readonly BufferedStream _reader;

    private RespClient(TcpClient client)
    {
        _client = client;
        _stream = client.GetStream();
        _reader = new BufferedStream(_stream, 4096);
    }

    /// <summary>Connects to <paramref name="address"/>, written host:port as REDIS_ADDR is.</summary>
    public static async Task<RespClient> ConnectAsync(string address, CancellationToken ct)
    {
        var colon = address.LastIndexOf(':');
        if (colon <= 0 || !int.TryParse(address[(colon + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out var port) || port is < 1 or > 65535)
        {
            throw new ArgumentException($"REDIS_ADDR '{address}' is not host:port");
        }
        var client = new TcpClient { NoDelay = true };
        try
        {
            await client.ConnectAsync(address[..colon].Trim('[', ']'), port, ct);
            return new RespClient(client);
        }
        catch
        {
            client.Dispose();
            throw;
        }
    }

    /// <summary>Sends one command and returns its reply: string, long, null (nil) or object?[] (array).</summary>
    public async Task<object?> CommandAsync(CancellationToken ct, params string[] args)
    {
        var request = new StringBuilder();
        request.Append('*').Append(args.Length).Append("\r\n");
        foreach (var arg in args)
        {
            request.Append('$').Append(Encoding.UTF8.GetByteCount(arg)).Append("\r\n").Append(arg).Append("\r\n");
        }
        await _stream.WriteAsync(Encoding.UTF8.GetBytes(request.ToString()), ct);
        return await ReadReplyAsync(_reader, ct);
    }

    /// <summary>Reads one RESP2 reply.</summary>
    internal static async Task<object?> ReadReplyAsync(Stream stream, CancellationToken ct, int depth = 0)
    {
        var line = await ReadLineAsync(stream, ct);
        if (line.Length == 0)
        {
            throw new InvalidDataException("empty Redis reply line");
        }
        var rest = line[1..];
        switch (line[0])
        {
            case '+':
                return rest;
            case '-':
                throw new RedisException(rest);
            case ':':
                return long.TryParse(rest, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var n)
                    ? n : throw new InvalidDataException($"bad Redis integer '{rest}'");
            case '$':
                {
                    var length = ParseLength(rest, MaxBulkLength);
                    if (length < 0)
                    {
                        return null;
                    }
                    var data = new byte[length + 2];
                    await stream.ReadExactlyAsync(data, ct);
                    if (data[length] != '\r' || data[length + 1] != '\n')
                    {
                        throw new InvalidDataException("Redis bulk string not followed by CRLF");
                    }
                    return Encoding.UTF8.GetString(data, 0, length);
                }
            case '*':
                {
                    var count = ParseLength(rest, MaxArrayLength);
                    if (count < 0)
                    {
                        return null;
                    }
                    if (depth > 4)
                    {
                        throw new InvalidDataException("Redis reply nested too deeply");
                    }
                    var items = new object?[count];
                    for (var i = 0; i < count; i++)
                    {
                        items[i] = await ReadReplyAsync(stream, ct, depth + 1);
                    }
                    return items;
                }
            default:
                throw new InvalidDataException($"unknown Redis reply type '{line[0]}'");
        }
    }

    private static int ParseLength(string text, int max)
    {
        if (text == "-1")
        {
            return -1;
        }
        return int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var n) && n <= max
            ? n : throw new InvalidDataException($"Redis length '{text}' is not a length up to {max}");
    }

    private static async Task<string> ReadLineAsync(Stream stream, CancellationToken ct)
    {
        var bytes = new List<byte>();
        var one = new byte[1];
        while (true)
        {
            if (await stream.ReadAsync(one, ct) == 0)
            {
                throw new EndOfStreamException("Redis closed the connection");
            }
            if (one[0] == '\n' && bytes.Count > 0 && bytes[^1] == '\r')
            {
                bytes.RemoveAt(bytes.Count - 1);
                return Encoding.UTF8.GetString(bytes.ToArray());
            }
            if (bytes.Count >= MaxBulkLength)
            {
                throw new InvalidDataException("Redis reply line too long");
            }
            bytes.Add(one[0]);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _reader.DisposeAsync();
        _client.Dispose();
    }
}
