using FsCheck;
using FsCheck.Fluent;
using Potluck.Scheduler.Execution;
using static Potluck.Scheduler.Tests.Ledger.CreditsFixtures;

namespace Potluck.Scheduler.Tests.Execution;

public class TaskPayloadTests
{
    [Test]
    public void EncodeDecode_RoundTripsArgsAndStdin()
    {
        var payload = new TaskPayload(["1000", "", "ünïcode"], "seed bytes"u8.ToArray());
        Assert.That(TaskPayload.TryDecode(payload.Encode(), out var decoded), Is.True);
        Assert.That(decoded.Args, Is.EqualTo(payload.Args));
        Assert.That(decoded.Stdin.ToArray(), Is.EqualTo(payload.Stdin.ToArray()));
    }

    [Test]
    public void Decode_TooManyArgs_IsRefused()
    {
        var payload = new TaskPayload(Enumerable.Repeat("x", TaskPayload.MaxArgs + 1).ToArray(), ReadOnlyMemory<byte>.Empty);
        Assert.That(TaskPayload.TryDecode(payload.Encode(), out _), Is.False);
    }

    [Test]
    public void Decode_TrailingBytesOrTruncation_IsRefused()
    {
        var bytes = new TaskPayload(["a"], new byte[] { 1, 2, 3 }).Encode();
        Assert.That(TaskPayload.TryDecode(bytes.Append((byte)0).ToArray(), out _), Is.False);
        for (var i = 0; i < bytes.Length; i++)
        {
            Assert.That(TaskPayload.TryDecode(bytes.AsMemory(0, i), out _), Is.False, $"truncated at {i}");
        }
    }

    [FsCheck.NUnit.Property(MaxTest = 1000)]
    public Property Decode_RandomBytes_NeverThrows() =>
        Prop.ForAll(Bytes(0, 200), bytes =>
        {
            TaskPayload.TryDecode(bytes, out _);
            return true;
        });
}
