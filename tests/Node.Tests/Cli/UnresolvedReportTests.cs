using System.Text;
using Microsoft.Extensions.Time.Testing;
using Potluck.Node.Cli;
using Potluck.Node.Control;
using Potluck.Protocol.Identity;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Requesting;

namespace Potluck.Node.Tests.Cli;

/// <summary>
/// A result whose dispute stayed open (<see cref="SubmissionResult.Unresolved"/>: the checker in good standing disagreed and
/// no third provider in good standing decided) is reported as such by `potluck submit` (text, --json, --batch) and by the
/// control API's <c>submit</c> answer, and the CLI reads it back from the daemon.
/// </summary>
public sealed class UnresolvedReportTests
{
    private static readonly PeerId Provider = PrivateKey.FromSeed(new byte[32]).PeerId;

    private static SubmissionResult Result(UnresolvedReason? unresolved, bool verified = false) => new()
    {
        Status = ExecutionStatus.Success,
        Provider = Provider,
        Output = "out"u8.ToArray(),
        Fuel = 1_234,
        Cost = 5,
        Verified = verified,
        Unresolved = unresolved,
        History = [new AttemptRecord(Provider, LeaseOutcomeKind.Completed, "", 5)],
    };

    [TestCase(UnresolvedReason.NoThirdOpinion, "no-third-opinion")]
    [TestCase(UnresolvedReason.NoAgreement, "no-agreement")]
    public void SubmitJson_UnresolvedResult_NamesTheReason(UnresolvedReason reason, string name)
    {
        var json = ComputeCommands.SubmitCommand.ResultJson(Result(reason));

        Assert.That(json["unresolved"]!.GetValue<string>(), Is.EqualTo(name));
        Assert.That(json["verified"]!.GetValue<bool>(), Is.False);
    }

    [Test]
    public void SubmitJson_ResolvedResult_HasUnresolvedNull()
    {
        var json = ComputeCommands.SubmitCommand.ResultJson(Result(null, verified: true));

        Assert.That(json.ContainsKey("unresolved"), Is.True, "the field is always there, null when nothing is open");
        Assert.That(json["unresolved"], Is.Null);
    }

    [Test]
    public void SubmitText_UnresolvedResult_SaysUnresolvedAndWhy_ExitCodeUnchanged()
    {
        var result = Result(UnresolvedReason.NoThirdOpinion);

        Assert.That(ComputeCommands.SubmitCommand.ResultLine(result), Does.Contain(", unresolved, 1 attempt").And.Not.Contain("not re-checked"));
        Assert.That(ComputeCommands.SubmitCommand.UnresolvedMarker(UnresolvedReason.NoThirdOpinion),
            Is.EqualTo("unverified: the checker disagreed and no third provider in good standing could decide"));
        Assert.That(ComputeCommands.SubmitCommand.UnresolvedMarker(UnresolvedReason.NoAgreement), Does.StartWith("unverified: the checker disagreed").And.Contain("agreed with neither"));
        Assert.That(ComputeCommands.SubmitCommand.ExitCodeOf(result), Is.EqualTo(0), "as any unverified result that succeeded");
        Assert.That(ComputeCommands.SubmitCommand.ResultLine(Result(null)), Does.Contain(", not re-checked, "));
        Assert.That(ComputeCommands.SubmitCommand.ResultLine(Result(null, verified: true)), Does.Contain(", verified, "));
    }

    [TestCase(UnresolvedReason.NoThirdOpinion, "no-third-opinion")]
    [TestCase(UnresolvedReason.NoAgreement, "no-agreement")]
    [TestCase(null, null)]
    public void ControlSubmitAnswer_CarriesUnresolved_AndReadsBack(UnresolvedReason? reason, string? name)
    {
        var wire = SubmitControl.ToJson(Result(reason));

        Assert.That(wire.ContainsKey("unresolved"), Is.True);
        Assert.That(wire["unresolved"]?.GetValue<string>(), Is.EqualTo(name));
        var back = SubmitControl.FromJson(System.Text.Json.Nodes.JsonNode.Parse(wire.ToJsonString()));
        Assert.That(back.Unresolved, Is.EqualTo(reason));
        Assert.That(back.Verified, Is.False);
    }

    [Test]
    public void ControlSubmitAnswer_FromAnOlderNode_WithoutTheField_IsNotUnresolved()
    {
        var wire = SubmitControl.ToJson(Result(null));
        wire.Remove("unresolved");

        Assert.That(SubmitControl.FromJson(wire).Unresolved, Is.Null);
    }

    [Test]
    public void ControlSubmitAnswer_UnknownUnresolvedValue_IsAnIOException()
    {
        var wire = SubmitControl.ToJson(Result(UnresolvedReason.NoAgreement));
        wire["unresolved"] = "maybe";

        var e = Assert.Throws<IOException>(() => SubmitControl.FromJson(wire));
        Assert.That(e!.Message, Does.Contain("unresolved").And.Contain("maybe"));
    }

    [Test]
    public async Task Batch_UnresolvedInput_IsCountedAndNamed()
    {
        var folder = Directory.CreateTempSubdirectory("potluck-unresolved-");
        try
        {
            var inputs = new List<string>();
            foreach (var name in new[] { "a", "b", "c" })
            {
                var path = Path.Combine(folder.FullName, name);
                await File.WriteAllTextAsync(path, name);
                inputs.Add(path);
            }
            // b's dispute stays open; a is verified; c is not re-checked.
            Task<SubmissionResult> Submit(TaskSubmission s, CancellationToken ct) => Task.FromResult(Encoding.ASCII.GetString(s.Input.Span) switch
            {
                "a" => Result(null, verified: true),
                "b" => Result(UnresolvedReason.NoAgreement),
                _ => Result(null),
            });
            var error = new StringWriter();
            var runner = new BatchRunner(Submit, error, input => new TaskSubmission { Module = new byte[] { 0 }, Input = input }, parallel: 2,
                new FakeTimeProvider(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero)));

            var summary = await runner.RunAsync(inputs, Path.Combine(folder.FullName, "out"), 1 << 20, CancellationToken.None);

            Assert.That(summary.Done, Is.EqualTo(3));
            Assert.That(summary.Verified, Is.EqualTo(1));
            Assert.That(summary.Unresolved, Is.EqualTo(new[] { ("b", UnresolvedReason.NoAgreement) }));
            Assert.That(File.ReadAllText(Path.Combine(folder.FullName, "out", "b")), Is.EqualTo("out"), "the unverified output is kept, as any other");
        }
        finally
        {
            folder.Delete(recursive: true);
        }
    }
}
