using Potluck.Fuzz;
using Potluck.Scheduler.Advertising;
using Potluck.Scheduler.Execution;

namespace Potluck.Node.Tests.Fuzz;

/// <summary>
/// The short version of <c>scripts/fuzz/run.sh</c> that CI runs: every decoder of the fuzz runner, 5,000 random and
/// mutated inputs each (the runner does 10^6), no crash and no hang.
/// </summary>
[Category("Adversarial")]
public class FuzzSmokeTests
{
    private static IEnumerable<string> Decoders() => Targets.All().Select(t => t.Name);

    [TestCaseSource(nameof(Decoders))]
    public void RandomAndMutatedInputs_EndInATypedRefusal_NeverACrashOrAHang(string decoder)
    {
        var target = Targets.All().Single(t => t.Name == decoder);

        var report = Fuzzer.Run(target, 5_000, seed: 7, hangMs: 2_000);

        Assert.That(report.Crashes + report.Hangs, Is.Zero,
            string.Join("\n", report.Examples.Select(x => $"{x.Error.GetType().Name}: {x.Error.Message} on {Convert.ToHexString(x.Input)}")));
        Assert.That(report.Refused, Is.GreaterThan(0), "the inputs reached the decoder's refusals");
    }

    [TestCase("93C424DC899A696D652035302E30DB4433705A3F00C7EC96CD85B82E3101C44015B2421DE42199C6B28C8F7052C3A4507D94A4D85F3B1D695840D10801122023B31786E19785C75170BF8AB21B10B5FF6A30A405D1695840D10801122023B317864B68883D0877EAE0C88C2903B6FA75BEC07CE7ECD3AE35A417A90D74203F6F525655A4C9B423806B2E5BFFA2430D374CB08D307BC25BA3")]
    public void Advertisement_AStringLengthPastTheInput_IsMalformed(string hex) =>
        Assert.That(AdvertisementCodec.TryOpen(Convert.FromHexString(hex), new AdvertisementOptions(), out _), Is.EqualTo(AdVerdict.Malformed));

    [TestCase("9292DBA177C403010203")]
    [TestCase("9290C6E99F81C400")]
    public void TaskPayload_ALengthPastTheInput_IsRefused(string hex) =>
        Assert.That(TaskPayload.TryDecode(Convert.FromHexString(hex), out _), Is.False);
}
