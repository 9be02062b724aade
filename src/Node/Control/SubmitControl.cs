using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Potluck.Scheduler.Execution;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Requesting;

namespace Potluck.Node.Control;

/// <summary>
/// <c>submit</c> on the running node: `potluck submit` hands its task to the daemon of its data directory rather than
/// starting a second node. The module and input travel first as blobs (<see cref="ControlServer.BlobPutMethod"/>, by
/// SHA-256, so a batch sends its module once); the call names them and waits for the result, which it returns whole
/// (output and stderr in base64; <c>unresolved</c> names an open dispute, see <see cref="UnresolvedName"/>). A submission that finds no result answers <c>{"failed": true, "error", "reasons",
/// "attempts"}</c>, not an error, so the CLI prints the same as with a node of its own. Closing the request (Ctrl-C on
/// the CLI) cancels the task.
/// </summary>
public static class SubmitControl
{
    public const string Method = "submit";

    /// <summary>The error message when a named blob is not held (the client uploads it again and retries).</summary>
    public const string MissingBlob = "blob not held: ";

    public static void Register(ControlServer server, PotluckNode node)
    {
        server.Register(Method, (p, ct) => SubmitAsync(server.Blobs, node, p, ct));
    }

    private static async ValueTask<JsonNode?> SubmitAsync(BlobStore blobs, PotluckNode node, JsonElement p, CancellationToken ct)
    {
        var compute = node.Compute ?? throw new ControlException(ControlErrorCode.Unavailable, "compute is off on this node (compute:enabled = false)");
        var module = Blob(blobs, p, "module");
        var input = Blob(blobs, p, "input");
        var args = new List<string>();
        if (p.TryGetProperty("args", out var a))
        {
            if (a.ValueKind != JsonValueKind.Array || a.GetArrayLength() > TaskPayload.MaxArgs)
            {
                throw new ControlException(ControlErrorCode.BadRequest, $"\"args\" must be an array of at most {TaskPayload.MaxArgs} strings");
            }
            foreach (var arg in a.EnumerateArray())
            {
                args.Add(arg.ValueKind == JsonValueKind.String ? arg.GetString()! : throw new ControlException(ControlErrorCode.BadRequest, "\"args\" must be strings"));
            }
        }
        double? verifyRate = null;
        if (p.TryGetProperty("verify_rate", out var v) && v.ValueKind != JsonValueKind.Null)
        {
            verifyRate = v.ValueKind == JsonValueKind.Number && v.TryGetDouble(out var r) && r > 0 && r <= 1
                ? r : throw new ControlException(ControlErrorCode.BadRequest, "\"verify_rate\" must be above 0 and at most 1");
        }
        var submission = new TaskSubmission
        {
            Module = module,
            Input = input,
            Args = [.. args],
            Fuel = Long(p, "fuel", 1_000_000_000, 1, long.MaxValue),
            MaxPricePerMegaFuel = Long(p, "max_price", 100, 0, 1_000_000_000),
            VerifyRate = verifyRate,
            Replicas = (int)Long(p, "replicas", 1, 1, 16),
        };
        try
        {
            return ToJson(await compute.SubmitAsync(submission, ct));
        }
        catch (ArgumentException e)
        {
            throw new ControlException(ControlErrorCode.BadRequest, e.Message);
        }
        catch (SubmissionException e)
        {
            var reasons = new JsonObject();
            foreach (var (reason, count) in e.Reasons)
            {
                reasons[reason] = count;
            }
            return new JsonObject { ["failed"] = true, ["error"] = e.Message, ["reasons"] = reasons, ["attempts"] = Attempts(e.Attempts) };
        }
    }

    private static byte[] Blob(BlobStore blobs, JsonElement p, string name)
    {
        if (!p.TryGetProperty(name, out var h) || h.ValueKind != JsonValueKind.String || h.GetString() is not { Length: 64 } hash)
        {
            throw new ControlException(ControlErrorCode.BadRequest, $"\"{name}\" must be the SHA-256 (hex) of a blob sent with {ControlServer.BlobPutMethod}");
        }
        return blobs.Get(hash) ?? throw new ControlException(ControlErrorCode.BadRequest, MissingBlob + hash);
    }

    private static long Long(JsonElement p, string name, long fallback, long min, long max)
    {
        if (!p.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null)
        {
            return fallback;
        }
        return v.ValueKind == JsonValueKind.Number && v.TryGetInt64(out var i) && i >= min && i <= max
            ? i : throw new ControlException(ControlErrorCode.BadRequest, $"\"{name}\" must be a whole number from {min} to {max}");
    }

    private static JsonArray Attempts(IEnumerable<AttemptRecord> attempts) =>
        new([.. attempts.Select(x => (JsonNode)new JsonObject
        {
            ["provider"] = x.Provider.ToString(),
            ["outcome"] = x.Outcome.ToString().ToLowerInvariant(),
            ["detail"] = x.Detail,
            ["paid"] = x.Paid,
        })]);

    public static JsonObject ToJson(SubmissionResult r) => new()
    {
        ["status"] = r.Status.ToString(),
        ["exit_code"] = r.ExitCode,
        ["provider"] = r.Provider.ToString(),
        ["fuel"] = r.Fuel,
        ["cost_micro_credits"] = r.Cost,
        ["verified"] = r.Verified,
        ["unresolved"] = UnresolvedName(r.Unresolved),
        ["output_base64"] = Convert.ToBase64String(r.Output.Span),
        ["stderr_base64"] = Convert.ToBase64String(r.Stderr.Span),
        ["error"] = r.Error,
        ["attempts"] = Attempts(r.History),
    };

    /// <summary>
    /// The <c>unresolved</c> field of a result: <c>"no-third-opinion"</c> or <c>"no-agreement"</c> when the checker in good
    /// standing contradicted the result and no third opinion decided (the result is unverified), null otherwise.
    /// </summary>
    public static string? UnresolvedName(UnresolvedReason? reason) => reason switch
    {
        null => null,
        UnresolvedReason.NoThirdOpinion => "no-third-opinion",
        UnresolvedReason.NoAgreement => "no-agreement",
        _ => throw new ArgumentOutOfRangeException(nameof(reason), reason, null),
    };

    /// <summary>Reads what <see cref="UnresolvedName"/> wrote; anything else is a <see cref="FormatException"/>.</summary>
    public static UnresolvedReason? ParseUnresolved(string? name) => name switch
    {
        null => null,
        "no-third-opinion" => UnresolvedReason.NoThirdOpinion,
        "no-agreement" => UnresolvedReason.NoAgreement,
        _ => throw new FormatException($"unknown \"unresolved\" value '{name}'"),
    };

    /// <summary>Reads what <see cref="ToJson"/> wrote; a failed submission becomes the <see cref="SubmissionException"/> it was.</summary>
    public static SubmissionResult FromJson(JsonNode? node)
    {
        try
        {
            var o = node as JsonObject ?? throw new IOException("the node answered 'submit' with no result");
            var attempts = (o["attempts"] as JsonArray ?? []).Select(x => new AttemptRecord(
                Protocol.Identity.PeerId.Parse(x!["provider"]!.GetValue<string>()),
                Enum.Parse<Scheduler.Leasing.LeaseOutcomeKind>(x["outcome"]!.GetValue<string>(), ignoreCase: true),
                x["detail"]!.GetValue<string>(),
                x["paid"]!.GetValue<long>())).ToList();
            if (o["failed"]?.GetValue<bool>() == true)
            {
                var reasons = (o["reasons"] as JsonObject ?? []).ToDictionary(kv => kv.Key, kv => kv.Value!.GetValue<int>());
                throw new SubmissionException(o["error"]!.GetValue<string>(), attempts) { Reasons = reasons };
            }
            return new SubmissionResult
            {
                Status = Enum.Parse<ExecutionStatus>(o["status"]!.GetValue<string>()),
                ExitCode = o["exit_code"]!.GetValue<int>(),
                Provider = Protocol.Identity.PeerId.Parse(o["provider"]!.GetValue<string>()),
                Fuel = o["fuel"]!.GetValue<long>(),
                Cost = o["cost_micro_credits"]!.GetValue<long>(),
                Verified = o["verified"]!.GetValue<bool>(),
                Unresolved = ParseUnresolved(o["unresolved"]?.GetValue<string>()),
                Output = Convert.FromBase64String(o["output_base64"]!.GetValue<string>()),
                Stderr = Convert.FromBase64String(o["stderr_base64"]!.GetValue<string>()),
                Error = o["error"]?.GetValue<string>(),
                History = attempts,
            };
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException or NullReferenceException or ArgumentException or JsonException)
        {
            throw new IOException(string.Create(CultureInfo.InvariantCulture, $"the node's answer to 'submit' has an unexpected shape: {e.Message}"), e);
        }
    }
}
