using Potluck.Node.Cli;
using Potluck.Node.Hosting;
using Potluck.Scheduler.Accounting;

namespace Potluck.Node.Tests.Cli;

/// <summary>Credit from verified history: documented defaults, range-checked at start with a message naming the key.</summary>
public class HistoryCreditOptionsTests
{
    private static IReadOnlyList<string> Problems(ChainHistoryOptions history)
    {
        var compute = new ComputeOptions();
        return PotluckOptionsValidator.Validate(new PotluckOptions
        {
            Compute = compute with { Accounting = compute.Accounting with { History = history } },
        });
    }

    [Test]
    public void Defaults_AreValid_AQuarterOfTheVerifiedContribution_AtMostTenCredits()
    {
        var d = new ChainHistoryOptions();
        Assert.That((d.CreditShare, d.MaxCredit), Is.EqualTo((0.25, 10_000_000L)));
        Assert.That(Problems(d), Is.Empty);
        Assert.That(Problems(d with { CreditShare = 0, MaxCredit = 0 }), Is.Empty, "0 turns credit from history off");
    }

    [TestCase(-0.1, "'compute:accounting:history:creditShare' is -0.1; it must be 0 to 1")]
    [TestCase(1.01, "'compute:accounting:history:creditShare' is 1.01; it must be 0 to 1")]
    [TestCase(double.NaN, "'compute:accounting:history:creditShare' is NaN; it must be 0 to 1")]
    public void ShareOutOfRange_IsRefusedWithItsKey(double share, string expected) =>
        Assert.That(Problems(new ChainHistoryOptions { CreditShare = share }), Has.Some.StartsWith(expected));

    [TestCase(-1L, "'compute:accounting:history:maxCredit' is -1; it must be 0 to 1000000000000000")]
    [TestCase(1_000_000_000_000_001L, "'compute:accounting:history:maxCredit' is 1000000000000001")]
    public void CapOutOfRange_IsRefusedWithItsKey(long cap, string expected) =>
        Assert.That(Problems(new ChainHistoryOptions { MaxCredit = cap }), Has.Some.StartsWith(expected));

    [Test]
    public void TheKeys_BindFromTheConfigurationFile()
    {
        var dir = Directory.CreateTempSubdirectory("potluck-cli-").FullName;
        try
        {
            File.WriteAllText(Path.Combine(dir, NodeConfiguration.FileName),
                "{\"compute\": {\"accounting\": {\"history\": {\"creditShare\": 0.5, \"maxCredit\": 3000000}}}}");
            var options = RunCommand.ResolveRunOptions(Commands.Parse(["run", "--data-dir", dir]));
            Assert.That((options.Compute.Accounting.History.CreditShare, options.Compute.Accounting.History.MaxCredit), Is.EqualTo((0.5, 3_000_000L)));

            File.WriteAllText(Path.Combine(dir, NodeConfiguration.FileName), "{\"compute\": {\"accounting\": {\"history\": {\"creditShare\": 2}}}}");
            var e = Assert.Throws<Microsoft.Extensions.Options.OptionsValidationException>(() => RunCommand.ResolveRunOptions(Commands.Parse(["run", "--data-dir", dir])))!;
            Assert.That(e.Failures, Has.Some.Contains("'compute:accounting:history:creditShare' is 2"));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
