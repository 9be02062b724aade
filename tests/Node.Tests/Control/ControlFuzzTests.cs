using System.Buffers;
using System.IO.Pipelines;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging.Abstractions;
using Potluck.Node.Control;

namespace Potluck.Node.Tests.Control;

/// <summary>Any bytes into the control endpoint's line reader and request parser end in a typed answer, nothing else.</summary>
public class ControlFuzzTests
{
    private static readonly string[] Codes = ["bad_request", "unknown_method", "line_too_long", "busy", "unavailable", "internal"];

    private static ControlServer Server()
    {
        var server = new ControlServer(Path.GetTempPath(), new ControlOptions(), TimeProvider.System, NullLoggerFactory.Instance);
        server.Register("echo", (p, _) => ValueTask.FromResult<JsonNode?>(JsonNode.Parse(p.GetRawText())));
        return server;
    }

    [FsCheck.NUnit.Property(MaxTest = 300)]
    public bool Handle_AnyLine_AnswersOkOrATypedError(byte[] line)
    {
        var response = Server().HandleAsync(line ?? [], CancellationToken.None).GetAwaiter().GetResult();
        return response["ok"]!.GetValue<bool>()
            || Codes.Contains(response["error"]!["code"]!.GetValue<string>());
    }

    [FsCheck.NUnit.Property(MaxTest = 300)]
    public bool Handle_MutatedValidRequest_AnswersOkOrATypedError(byte[] noise, int position)
    {
        var bytes = Encoding.UTF8.GetBytes("{\"method\":\"echo\",\"params\":{\"a\":[1,2,{\"b\":null}]}}").ToList();
        bytes.InsertRange((int)((uint)position % (bytes.Count + 1)), noise ?? []);
        var response = Server().HandleAsync(bytes.ToArray(), CancellationToken.None).GetAwaiter().GetResult();
        return response["ok"]!.GetValue<bool>() || Codes.Contains(response["error"]!["code"]!.GetValue<string>());
    }

    [FsCheck.NUnit.Property(MaxTest = 200)]
    public bool ReadLine_AnyBytesInAnyChunks_YieldsBoundedLinesThenEnd(byte[] data, byte chunk)
    {
        data ??= [];
        const int max = 16;
        var pipe = new Pipe();
        var size = Math.Max(1, (int)chunk);
        for (var i = 0; i < data.Length; i += size)
        {
            pipe.Writer.Write(data.AsSpan(i, Math.Min(size, data.Length - i)));
        }
        pipe.Writer.Complete();
        var lines = 0;
        while (true)
        {
            var line = ControlServer.ReadLineAsync(pipe.Reader, max, CancellationToken.None).AsTask().GetAwaiter().GetResult();
            if (line is null || line.TooLong)
            {
                break;
            }
            if (line.Bytes.Length > max || line.Bytes.Contains((byte)'\n'))
            {
                return false;
            }
            lines++;
        }
        return lines <= data.Count(b => b == (byte)'\n');
    }
}
