global using NUnit.Framework;
global using Potluck.Tests;
