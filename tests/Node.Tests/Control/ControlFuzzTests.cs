using System.Text;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging.Abstractions;
using Potluck.Node.Control;

namespace Potluck.Node.Tests.Control;

/// <summary>Any bytes as a control request's parameters end in a typed answer, nothing else.</summary>
public class ControlFuzzTests
{
    private static readonly string[] Codes = ["bad_request", "unknown_method", "line_too_long", "busy", "unavailable", "internal", "unauthorized"];

    private static ControlServer Server()
    {
        var server = new ControlServer(Path.GetTempPath(), new ControlOptions(), NullLoggerFactory.Instance);
        server.Register("echo", (p, _) => ValueTask.FromResult<JsonNode?>(JsonNode.Parse(p.GetRawText())));
        return server;
    }

    [FsCheck.NUnit.Property(MaxTest = 300)]
    public bool Handle_AnyBody_AnswersOkOrATypedError(byte[] body, bool known)
    {
        var response = Server().HandleAsync(known ? "echo" : "nope", body ?? [], CancellationToken.None).GetAwaiter().GetResult();
        return response["ok"]!.GetValue<bool>()
            || Codes.Contains(response["error"]!["code"]!.GetValue<string>());
    }

    [FsCheck.NUnit.Property(MaxTest = 300)]
    public bool Handle_MutatedValidParams_AnswersOkOrATypedError(byte[] noise, int position)
    {
        var bytes = Encoding.UTF8.GetBytes("{\"a\":[1,2,{\"b\":null}]}").ToList();
        bytes.InsertRange((int)((uint)position % (bytes.Count + 1)), noise ?? []);
        var response = Server().HandleAsync("echo", bytes.ToArray(), CancellationToken.None).GetAwaiter().GetResult();
        return response["ok"]!.GetValue<bool>() || Codes.Contains(response["error"]!["code"]!.GetValue<string>());
    }
}
